"""The OWLv2 detector judge: box logic on mocked boxes; a tiny random OWLv2 loaded by path."""

from __future__ import annotations

import numpy as np
import pytest

from seeds.tiny_pipeline import write_tokenizer
from tamis.seeds.errors import JudgeError
from tamis.seeds.judges.detector import (
    DetectorJudge,
    box_iou,
    nms,
    relation_of,
    verdict_from_boxes,
)
from tamis.seeds.prompts import ObjectName, Question

APPLE, CAT = ObjectName("apple", "apples", "an"), ObjectName("cat", "cats")


def _brute_nms(boxes, scores, iou):
    keep = []
    for i in sorted(range(len(scores)), key=lambda k: -scores[k]):
        if all(box_iou(boxes[[i]], boxes[[j]])[0, 0] <= iou for j in keep):
            keep.append(i)
    return keep


def test_nms_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(20):
        xy = rng.uniform(0, 0.7, (8, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(0.05, 0.3, (8, 2))], axis=1)
        scores = rng.uniform(size=8)
        assert nms(boxes, scores, 0.3) == _brute_nms(boxes, scores, 0.3)


def test_count_threshold_and_positions():
    boxes = np.array(
        [[0.1, 0.1, 0.2, 0.2], [0.11, 0.1, 0.21, 0.2], [0.6, 0.6, 0.8, 0.8], [0.4, 0.4, 0.5, 0.5]]
    )
    scores = np.array([0.9, 0.8, 0.7, 0.1])
    labels = np.zeros(4, int)
    v = verdict_from_boxes(Question("count", APPLE, count=2), boxes, scores, labels, 0.3, 0.5)
    assert v.answer == 2 and v.correct  # the overlapping box is suppressed, the weak one dropped
    assert np.allclose(v.positions, [(0.15, 0.15), (0.7, 0.7)])


def test_relations():
    assert relation_of((0.2, 0.5), (0.8, 0.5), 0.05) == "left of"
    assert relation_of((0.8, 0.5), (0.2, 0.5), 0.05) == "right of"
    assert relation_of((0.5, 0.1), (0.5, 0.9), 0.05) == "on top of"
    assert relation_of((0.5, 0.9), (0.5, 0.1), 0.05) == "under"
    assert relation_of((0.5, 0.5), (0.52, 0.5), 0.05) is None
    boxes = np.array([[0.1, 0.4, 0.3, 0.6], [0.7, 0.4, 0.9, 0.6]])
    scores, labels = np.array([0.9, 0.9]), np.array([0, 1])
    q = Question("spatial", APPLE, relation="right of", obj2=CAT)
    v = verdict_from_boxes(q, boxes, scores, labels)
    assert v.correct is False and v.relation_seen == "left of"
    missing = verdict_from_boxes(q, boxes[:1], scores[:1], labels[:1])
    assert missing.correct is False and missing.relation_seen is None


@pytest.fixture(scope="module")
def tiny_owl(tmp_path_factory):
    from transformers import (
        CLIPTokenizer,
        Owlv2Config,
        Owlv2ForObjectDetection,
        Owlv2ImageProcessorPil,
        Owlv2Processor,
    )

    d = tmp_path_factory.mktemp("owl")
    write_tokenizer(d / "tok")
    tok = CLIPTokenizer.from_pretrained(str(d / "tok"))
    text = dict(
        vocab_size=len(tok),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=16,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    vision = dict(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    model = Owlv2ForObjectDetection(
        Owlv2Config(text_config=text, vision_config=vision, projection_dim=16)
    )
    proc = Owlv2Processor(
        image_processor=Owlv2ImageProcessorPil(size={"height": 32, "width": 32}), tokenizer=tok
    )
    model.save_pretrained(str(d / "model"))
    proc.save_pretrained(str(d / "model"))
    return d / "model"


def test_tiny_owlv2_by_path(tiny_owl, tmp_path):
    judge = DetectorJudge.from_pretrained(tiny_owl, threshold=0.0)
    boxes, scores, labels = judge.detect(np.zeros((16, 16, 3), np.uint8), ["a photo of a cat"])
    assert boxes.shape == (16, 4) and scores.shape == (16,) and set(labels) <= {0}
    assert (boxes >= 0).all() and (boxes <= 1).all()
    qs = [Question("count", APPLE, count=2), Question("spatial", APPLE, None, "under", CAT)]
    verdicts = judge.judge(np.zeros((2, 16, 16, 3), np.uint8), qs)
    assert all(v.correct in (True, False) for v in verdicts)
    assert verdicts[0].answer == len(verdicts[0].positions)
    with pytest.raises(JudgeError, match="config.json is missing"):
        DetectorJudge.from_pretrained(tmp_path)


def test_iou_by_hand():
    a = np.array([[0, 0, 2, 2]])
    b = np.array([[1, 1, 3, 3], [5, 5, 6, 6]])
    assert box_iou(a, b)[0].tolist() == pytest.approx([1 / 7, 0.0])
