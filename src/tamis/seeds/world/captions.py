"""World vocabulary, prompt splits and the noisy "web-like" pretraining captions.

The world's objects are ``ObjectName``s such as "red circle" / "red circles"; its backgrounds are
phrases such as "on a cream background". Prompts (for mining, fine-tuning and evaluation) are
built with :func:`tamis.seeds.prompts.numerical_prompts` / ``spatial_prompts`` and split into
disjoint train/eval sets by held-out (colour, shape, count) combinations and held-out object
pairs, mirroring the paper's disjoint prompt sets.

Pretraining captions imitate web alt-text: a share of them is wrong (off-by-one counts, swapped
relations) or vague ("some red circles"), and layouts follow a few biased modes
(:data:`~tamis.seeds.world.render.LAYOUT_MODES`). The base model is therefore unreliable and the
seed (initial noise) picks a layout mode.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tamis.seeds.prompts import (
    COUNT_WORDS,
    INVERSE_RELATIONS,
    RELATION_PHRASES,
    RELATIONS,
    ObjectName,
    Prompt,
    numerical_prompts,
    spatial_prompts,
)
from tamis.seeds.world.render import BACKGROUNDS, COLOURS, MAX_COUNT, SHAPES, count_scene, render
from tamis.seeds.world.render import spatial_scene as _spatial_scene

#: Counts used by the world's numerical prompts (the 32x32 canvas holds 1-5 objects of 6-9 px).
WORLD_COUNTS: tuple[int, ...] = (2, 3, 4, 5)


def object_name(colour: str, kind: str) -> ObjectName:
    """Return the :class:`ObjectName` of a (colour, shape), e.g. "an orange square"."""
    if colour not in COLOURS:
        raise ValueError(f"unknown colour {colour!r}; expected one of {list(COLOURS)}")
    if kind not in SHAPES:
        raise ValueError(f"unknown shape {kind!r}; expected one of {list(SHAPES)}")
    article = "an" if colour[0] in "aeiou" else "a"
    return ObjectName(f"{colour} {kind}", f"{colour} {kind}s", article)


def parse_object(obj: ObjectName) -> tuple[str, str]:
    """Return ``(colour, shape)`` of a world object name.

    Raises:
        ValueError: the name is not "<colour> <shape>" of this world.

    """
    parts = obj.singular.split()
    if len(parts) != 2 or parts[0] not in COLOURS or parts[1] not in SHAPES:
        raise ValueError(
            f"{obj.singular!r} is not a shapes-world object (<colour> <shape> with colour in "
            f"{list(COLOURS)} and shape in {list(SHAPES)})"
        )
    return parts[0], parts[1]


OBJECTS: tuple[ObjectName, ...] = tuple(object_name(c, k) for c in COLOURS for k in SHAPES)
BACKGROUND_PHRASES: dict[str, str] = {b: f"on a {b} background" for b in BACKGROUNDS}


def background_of(phrase: str | None) -> str:
    """Return the background tint of a background phrase (None -> "white")."""
    if not phrase:
        return "white"
    for key, value in BACKGROUND_PHRASES.items():
        if value == phrase or key == phrase:
            return key
    raise ValueError(f"unknown background {phrase!r}; expected one of {list(BACKGROUND_PHRASES)}")


def _held_out_counts() -> set[tuple[str, str, int]]:
    """Every fifth (colour, shape, count) combination, by a fixed rotation (12 of 60)."""
    out = set()
    i = 0
    for c in COLOURS:
        for k in SHAPES:
            for n in WORLD_COUNTS:
                if i % 5 == 2:
                    out.add((c, k, n))
                i += 1
    return out


def _pairs() -> list[tuple[ObjectName, ObjectName]]:
    """Ordered pairs of objects with different colours and shapes."""
    out = []
    for a in OBJECTS:
        for b in OBJECTS:
            ca, ka = parse_object(a)
            cb, kb = parse_object(b)
            if ca != cb and ka != kb:
                out.append((a, b))
    return out


HELD_OUT_COUNTS: frozenset[tuple[str, str, int]] = frozenset(_held_out_counts())
ALL_PAIRS: tuple[tuple[ObjectName, ObjectName], ...] = tuple(_pairs())
#: Every fourth ordered pair is an evaluation pair.
EVAL_PAIRS: tuple[tuple[ObjectName, ObjectName], ...] = ALL_PAIRS[1::4]
TRAIN_PAIRS: tuple[tuple[ObjectName, ObjectName], ...] = tuple(
    p for i, p in enumerate(ALL_PAIRS) if i % 4 != 1
)


def world_prompts(split: str = "train", backgrounds: tuple[str, ...] = ("white",)) -> dict:
    """The world's numerical and spatial prompts of one split.

    Args:
        split: ``"train"`` (mining/fine-tuning prompts) or ``"eval"`` (held-out combinations).
        backgrounds: background tints used in numerical prompts.

    Returns:
        ``{"numerical": [Prompt, ...], "spatial": [Prompt, ...]}``.

    """
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    phrases = [BACKGROUND_PHRASES[background_of(b)] for b in backgrounds]
    numerical: list[Prompt] = []
    for n in WORLD_COUNTS:
        for obj in OBJECTS:
            c, k = parse_object(obj)
            if ((c, k, n) in HELD_OUT_COUNTS) == (split == "eval"):
                numerical += numerical_prompts([obj], phrases, counts=(n,), split=split)
    pairs = EVAL_PAIRS if split == "eval" else TRAIN_PAIRS
    return {"numerical": numerical, "spatial": spatial_prompts(list(pairs), split=split)}


def scene_for_prompt(rng: np.random.Generator, prompt: Prompt) -> tuple[np.ndarray, list]:
    """Render a correct scene for a prompt (used by tests and by the CNN judge's data)."""
    q = prompt.question
    if q.kind == "count":
        c, k = parse_object(q.obj)
        shapes = count_scene(rng, c, k, int(q.count))
        return render(shapes, background_of(prompt.background)), shapes
    assert q.obj2 is not None and q.relation is not None
    shapes = _spatial_scene(rng, parse_object(q.obj), q.relation, parse_object(q.obj2))
    return render(shapes, "white"), shapes


@dataclass(frozen=True)
class CaptionConfig:
    """How the pretraining captions are drawn.

    Attributes:
        noise: share of wrong or vague captions (the note recommends 20-30%).
        spatial_share: share of two-object spatial scenes.
        vague_share: share of noisy captions that are vague ("some red circles") rather than
            wrong (off-by-one count or swapped relation).
        hold_out: also leave the evaluation combinations out of pretraining (default False:
            the "web" saw everything; the split separates mining/fine-tuning from evaluation).
        pile_share: share of count scenes of two or more objects drawn as one touching clump
            (``count_scene(mode="pile")``) and still captioned with their true count, as
            cluttered web photographs are. Default 0 (the shipped world). Above 0 the layout
            alone decides whether an image can be counted, so a seed that leads to a clump is
            wrong however cleanly it is drawn: the "layout-dependent" world.

    """

    noise: float = 0.25
    spatial_share: float = 0.4
    vague_share: float = 0.3
    hold_out: bool = False
    pile_share: float = 0.0

    def __post_init__(self) -> None:
        """Validate the shares."""
        for name in ("noise", "spatial_share", "vague_share", "pile_share"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"CaptionConfig.{name} must be in [0, 1], got {v}")


def _count_caption(n: int, obj: ObjectName, background: str | None) -> str:
    noun = obj.singular if n == 1 else obj.plural
    text = f"{COUNT_WORDS[n]} {noun}"
    return f"{text}, {BACKGROUND_PHRASES[background]}" if background else text


def pretraining_example(rng: np.random.Generator, config: CaptionConfig = CaptionConfig()
                        ) -> tuple[np.ndarray, str]:
    """Draw one web-like (image, caption) pair.

    Returns:
        A uint8 ``(32, 32, 3)`` image and its (possibly noisy) caption.

    """
    colours, shapes = list(COLOURS), list(SHAPES)
    noisy = rng.random() < config.noise
    if rng.random() >= config.spatial_share:
        while True:
            c = colours[int(rng.integers(len(colours)))]
            k = shapes[int(rng.integers(len(shapes)))]
            n = int(rng.integers(1, MAX_COUNT + 1))
            if not (config.hold_out and (c, k, n) in HELD_OUT_COUNTS):
                break
        background = list(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))]
        mode = None
        if config.pile_share > 0 and n >= 2 and rng.random() < config.pile_share:
            mode = "pile"
        image = render(count_scene(rng, c, k, n, mode), background)
        obj = object_name(c, k)
        said_bg = background if rng.random() < 0.7 else None
        if noisy and rng.random() < config.vague_share:
            caption = f"some {obj.plural}"
            if said_bg:
                caption += f", {BACKGROUND_PHRASES[said_bg]}"
        elif noisy:
            wrong = n + (1 if rng.random() < 0.5 else -1)
            wrong = min(max(wrong, 1), MAX_COUNT)
            if wrong == n:
                wrong = n + 1 if n < MAX_COUNT else n - 1
            caption = _count_caption(wrong, obj, said_bg)
        else:
            caption = _count_caption(n, obj, said_bg)
        return image, caption
    pairs = TRAIN_PAIRS if config.hold_out else ALL_PAIRS
    a, b = pairs[int(rng.integers(len(pairs)))]
    relation = RELATIONS[int(rng.integers(len(RELATIONS)))]
    image = render(_spatial_scene(rng, parse_object(a), relation, parse_object(b)), "white")
    said = relation
    if noisy and rng.random() < config.vague_share:
        return image, f"{a.article} {a.singular} and {b.article} {b.singular}"
    if noisy:
        said = INVERSE_RELATIONS[relation]
    return image, f"{a.article} {a.singular} {RELATION_PHRASES[said]} {b.article} {b.singular}"


def pretraining_batch(rng: np.random.Generator, batch_size: int,
                      config: CaptionConfig = CaptionConfig()) -> tuple[np.ndarray, list[str]]:
    """Draw a batch: uint8 images ``(B, 32, 32, 3)`` and captions."""
    pairs = [pretraining_example(rng, config) for _ in range(batch_size)]
    return np.stack([p[0] for p in pairs]), [p[1] for p in pairs]


def vocabulary() -> list[str]:
    """Every word the world's captions and prompts use (sorted)."""
    words = {"some", "and", ",", "a", "an", "background", "on", "the", "left", "right", "of",
             "top", "under"}
    words |= set(COUNT_WORDS[n] for n in range(1, MAX_COUNT + 2))
    for b in BACKGROUNDS:
        words |= set(b.split())
    for o in OBJECTS:
        words |= set(o.singular.split()) | set(o.plural.split())
    return sorted(words)
