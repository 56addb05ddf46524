"""Renderer geometry/determinism and the exact checker on clean, hand-built and degraded scenes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tamis.seeds.prompts import Question
from tamis.seeds.world.captions import (
    OBJECTS,
    CaptionConfig,
    object_name,
    parse_object,
    pretraining_batch,
    scene_for_prompt,
    vocabulary,
    world_prompts,
)
from tamis.seeds.world.checker import ExactChecker, classify, degrade, relation_between
from tamis.seeds.world.render import (
    GAP,
    SIZE,
    Shape,
    count_scene,
    render,
    shape_mask,
    spatial_scene,
)


def _boxes_apart(shapes: list[Shape]) -> bool:
    for i, a in enumerate(shapes):
        for b in shapes[i + 1:]:
            if not (a.x + a.size + GAP <= b.x or b.x + b.size + GAP <= a.x
                    or a.y + a.size + GAP <= b.y or b.y + b.size + GAP <= a.y):
                return False
    return True


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), count=st.integers(1, 5))
def test_count_scene_geometry(seed: int, count: int) -> None:
    shapes = count_scene(np.random.default_rng(seed), "red", "circle", count)
    assert len(shapes) == count
    assert _boxes_apart(shapes)
    assert all(0 <= s.x <= SIZE - s.size and 0 <= s.y <= SIZE - s.size for s in shapes)
    assert all(6 <= s.size <= 9 for s in shapes)


def test_render_is_deterministic_and_pixel_exact() -> None:
    a = render(count_scene(np.random.default_rng(3), "blue", "square", 3), "cream")
    b = render(count_scene(np.random.default_rng(3), "blue", "square", 3), "cream")
    assert a.dtype == np.uint8 and a.shape == (32, 32, 3)
    assert np.array_equal(a, b)
    img = render([Shape("red", "square", 2, 3, 6)], "white")
    assert (img[3:9, 2:8] == (220, 30, 30)).all()
    assert (img[0:3] == 245).all() and (img[9:] == 245).all()


def test_pretraining_batch_is_deterministic() -> None:
    a = pretraining_batch(np.random.default_rng([0, 5]), 8)
    b = pretraining_batch(np.random.default_rng([0, 5]), 8)
    assert np.array_equal(a[0], b[0]) and a[1] == b[1]
    words = set(vocabulary())
    for text in a[1]:
        assert set(text.replace(",", " ,").split()) <= words


def test_caption_noise_share() -> None:
    from tamis.seeds.world.captions import pretraining_example

    rng = np.random.default_rng(0)
    caps = [pretraining_example(rng, CaptionConfig(noise=0.0))[1] for _ in range(200)]
    assert not any(c.startswith("some") or " and " in c for c in caps)
    caps = [pretraining_example(rng, CaptionConfig(noise=1.0, vague_share=1.0))[1]
            for _ in range(50)]
    assert all(c.startswith("some") or " and " in c for c in caps)
    with pytest.raises(ValueError, match="noise"):
        CaptionConfig(noise=1.5)


def test_shape_masks_and_errors() -> None:
    assert shape_mask("square", 7).all()
    assert 0.7 < shape_mask("circle", 9).mean() < 0.9
    with pytest.raises(ValueError, match="hexagon"):
        shape_mask("hexagon", 7)
    with pytest.raises(ValueError, match="size"):
        shape_mask("circle", 2)
    with pytest.raises(ValueError, match="pink"):
        render([Shape("pink", "circle", 0, 0, 6)])
    with pytest.raises(ValueError, match="outside"):
        render([Shape("red", "circle", 30, 0, 6)])
    with pytest.raises(ValueError, match="background"):
        render([], "black")
    with pytest.raises(ValueError, match="count"):
        count_scene(np.random.default_rng(0), "red", "circle", 6)
    with pytest.raises(ValueError, match="relation"):
        spatial_scene(np.random.default_rng(0), ("red", "circle"), "behind", ("blue", "square"))
    with pytest.raises(ValueError, match="not a shapes-world"):
        parse_object(object_name("red", "circle").__class__("apple", "apples"))


@pytest.mark.parametrize("kind", ["circle", "square", "triangle"])
@pytest.mark.parametrize("size", [6, 7, 8, 9])
def test_classify_every_shape_and_size(kind: str, size: int) -> None:
    assert classify(shape_mask(kind, size)) == kind


def test_checker_is_exact_on_clean_renders() -> None:
    ck = ExactChecker()
    rng = np.random.default_rng(7)
    correct = []
    for split in ("train", "eval"):
        ps = world_prompts(split, backgrounds=("white", "cream", "gray", "pale blue"))
        for p in ps["numerical"][::2] + ps["spatial"][::3]:
            image, _ = scene_for_prompt(rng, p)
            v = ck.judge_one(image, p.question)
            correct.append(v.correct)
            assert ck.valid(image)
    assert np.mean(correct) == 1.0, np.mean(correct)


def test_checker_wrong_counts_and_relations() -> None:
    ck = ExactChecker()
    red_c, blue_s = object_name("red", "circle"), object_name("blue", "square")
    scene = [Shape("red", "circle", 2, 12, 8), Shape("blue", "square", 20, 12, 8),
             Shape("red", "circle", 12, 1, 7)]
    img = render(scene)
    v = ck.judge_one(img, Question("count", red_c, count=2))
    assert v.answer == 2 and v.correct and len(v.positions) == 2
    assert not ck.judge_one(img, Question("count", red_c, count=3)).correct
    assert ck.judge_one(img, Question("count", blue_s, count=1)).correct
    # the largest red circle (8 px at x=2) is left of the blue square
    left = ck.judge_one(img, Question("spatial", red_c, relation="left of", obj2=blue_s))
    assert left.correct and left.relation_seen == "left of"
    assert not ck.judge_one(img, Question("spatial", red_c, relation="right of",
                                          obj2=blue_s)).correct
    missing = ck.judge_one(img, Question("spatial", red_c, relation="left of",
                                         obj2=object_name("green", "triangle")))
    assert missing.correct is False and missing.answer is False


def test_relation_between_reference() -> None:
    assert relation_between((0, 0), (10, 1), 2) == "left of"
    assert relation_between((10, 1), (0, 0), 2) == "right of"
    assert relation_between((5, 0), (4, 10), 2) == "on top of"
    assert relation_between((5, 10), (4, 0), 2) == "under"
    assert relation_between((5, 5), (6, 6), 2) is None


def test_checker_on_degraded_renders_and_validity() -> None:
    ck = ExactChecker()
    rng = np.random.default_rng(11)
    ps = world_prompts("train")["numerical"][::4]
    mild = []
    for p in ps:
        image, _ = scene_for_prompt(rng, p)
        mild.append(ck.judge_one(degrade(image, rng, blur=0.5, noise=10, jitter=1),
                                 p.question).correct)
    assert np.mean(mild) >= 0.9
    smear = np.full((2, 32, 32, 3), 245, np.uint8)
    smear[0, 5:8, 2:30] = (220, 30, 30)  # a long bar is no valid shape
    smear[1, 5:12, 5:12] = (220, 30, 30)
    assert ck.validity_rate(smear) == 0.5
    with pytest.raises(ValueError, match="at least one"):
        ck.validity_rate(smear[:0])
    with pytest.raises(ValueError, match="questions"):
        ck.judge(smear, [Question("count", OBJECTS[0], count=2)])
    with pytest.raises(ValueError, match="uint8"):
        ck.blobs(smear[0].astype(float))


def test_snap_to_palette_restores_noisy_renders() -> None:
    """Renders are palette images: snapping is the identity on them, and it undoes mild noise
    (so the checker's verdicts and validity are unchanged), pixel by pixel."""
    from tamis.seeds.world.checker import snap_to_palette

    rng = np.random.default_rng(0)
    prompts = world_prompts("train")["numerical"][:6]
    clean = np.stack([scene_for_prompt(rng, p)[0] for p in prompts])
    np.testing.assert_array_equal(snap_to_palette(clean), clean)
    noisy = np.clip(clean + rng.normal(0, 4, clean.shape), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(snap_to_palette(noisy), clean)
    assert snap_to_palette(clean[0]).shape == clean[0].shape
    with pytest.raises(ValueError, match="uint8"):
        snap_to_palette(clean.astype(np.float32))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), count=st.integers(2, 5))
def test_pile_is_one_touching_clump_the_checker_cannot_count(seed: int, count: int) -> None:
    from scipy import ndimage

    from tamis.seeds.world.render import MAX_SIZE, MIN_SIZE, PILE_MAX_OVERLAP

    shapes = count_scene(np.random.default_rng(seed), "green", "square", count, "pile")
    assert len(shapes) == count
    assert all(0 <= s.x <= SIZE - s.size and 0 <= s.y <= SIZE - s.size for s in shapes)
    assert all(MIN_SIZE <= s.size <= MAX_SIZE for s in shapes)
    for i, a in enumerate(shapes):  # no two boxes overlap by more than the allowed pixels
        for b in shapes[i + 1:]:
            ox = min(a.x + a.size, b.x + b.size) - max(a.x, b.x)
            oy = min(a.y + a.size, b.y + b.size) - max(a.y, b.y)
            assert min(ox, oy) <= PILE_MAX_OVERLAP + 1
    image = render(shapes, "white")
    mask = (image != 245).any(-1)
    assert ndimage.label(mask)[1] == 1  # squares of a pile form one connected region
    q = Question("count", object_name("green", "square"), count=count)
    assert ExactChecker().judge_one(image, q).correct is False


def test_pile_share_changes_only_the_cluttered_variant() -> None:
    a = pretraining_batch(np.random.default_rng([0, 9]), 16)
    b = pretraining_batch(np.random.default_rng([0, 9]), 16, CaptionConfig(pile_share=0.0))
    assert np.array_equal(a[0], b[0]) and a[1] == b[1]
    c = pretraining_batch(np.random.default_rng([0, 9]), 16, CaptionConfig(pile_share=1.0))
    assert not np.array_equal(a[0], c[0])
    with pytest.raises(ValueError, match="pile_share"):
        CaptionConfig(pile_share=-0.1)
    with pytest.raises(ValueError, match="pile"):
        count_scene(np.random.default_rng(0), "red", "circle", 3, "heap")


def test_clumped_tells_piles_from_spread_scenes() -> None:
    from tamis.seeds.world.checker import clumped

    rng = np.random.default_rng(4)
    piles = [render(count_scene(rng, "blue", "square", n, "pile")) for n in (2, 3, 4, 5)]
    spread = [render(count_scene(rng, "blue", "square", n)) for n in (2, 3, 4, 5)]
    assert all(clumped(im, "blue") for im in piles)
    assert not any(clumped(im, "blue") for im in spread)
    assert not clumped(piles[0], "red")  # another colour's blobs are not looked at
    with pytest.raises(ValueError, match="colour"):
        clumped(piles[0], "teal")
