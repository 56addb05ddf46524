"""The JSONL format, the containers and their bad-input errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tamis.rationale.data import (
    Review,
    ReviewSet,
    mask_to_spans,
    read_jsonl,
    spans_to_mask,
    tokenize,
    write_jsonl,
)

FIX = Path(__file__).parent / "fixtures"


def test_tokenize_words_and_punctuation():
    assert tokenize("Hazy amber pour; smells of PINE!") == [
        "hazy", "amber", "pour", ";", "smells", "of", "pine", "!"]
    assert tokenize("don't stop -- 4.5/5") == ["don't", "stop", "-", "-", "4", ".", "5", "/", "5"]
    assert tokenize("") == [] and tokenize("  \n ") == []
    with pytest.raises(TypeError, match="str"):
        tokenize(None)  # type: ignore[arg-type]


def test_read_fixture():
    rs = read_jsonl(FIX / "reviews.jsonl")
    assert rs.aspects == ("appearance", "aroma") and len(rs) == 2
    assert rs.reviews[0].tokens[:3] == ["hazy", "amber", "pour"]
    y = rs.ratings()
    assert y[0].tolist() == [0.8, 0.6] and math.isnan(y[1, 0]) and y[1, 1] == 0.25
    g = rs.gold_masks(0)
    assert g.shape == (2, 8)
    assert g[0].tolist() == [1, 1, 1, 0, 0, 0, 0, 0] and g[1].tolist() == [0, 0, 0, 0, 1, 1, 1, 0]
    assert rs.gold_masks(1) is None and rs.annotated() == [0]


def test_round_trip(tmp_path):
    rs = ReviewSet(("a", "b"), [
        Review(["x", "y", "z"], np.array([0.5, np.nan]), {"a": [(0, 2)], "b": []}),
        Review(["w"], np.array([1.0, 0.0]), None),
    ])
    p = tmp_path / "r.jsonl"
    write_jsonl(p, rs)
    back = read_jsonl(p, aspects=("a", "b"))
    assert back.aspects == rs.aspects
    for r0, r1 in zip(rs.reviews, back.reviews):
        assert r0.tokens == r1.tokens
        np.testing.assert_array_equal(r0.ratings, r1.ratings)
        assert r0.rationales == r1.rationales
    # a second write replaces the file completely
    write_jsonl(p, rs.subset([1]))
    assert len(read_jsonl(p, aspects=("a", "b"))) == 1


def _write(tmp_path, *objs_or_lines) -> Path:
    p = tmp_path / "bad.jsonl"
    p.write_text("".join((o if isinstance(o, str) else json.dumps(o)) + "\n"
                         for o in objs_or_lines))
    return p


@pytest.mark.parametrize("obj, msg", [
    ({"text": "good beer"}, r"bad.jsonl:2: line has no 'ratings'"),
    ({"text": "", "ratings": {"a": 0.5}}, r"bad.jsonl:2: empty text"),
    ({"text": "ok", "ratings": {"zzz": 0.5}},
     r"unknown aspect\(s\) \['zzz'\]; known aspects: \['a'\]"),
    ({"text": "ok", "ratings": {"a": 1.5}}, r"outside \[0, 1\]"),
    ({"text": "ok", "ratings": {"a": "high"}}, r"must be a number"),
    ({"ratings": {"a": 0.5}}, r"neither 'text' nor 'tokens'"),
    ({"text": "ok", "ratings": {"a": 0.5}, "rationales": {"a": [[0, 5]]}}, r"outside the 1 tokens"),
    ({"text": "ok", "ratings": {"a": 0.5}, "rationales": {"b": [[0, 1]]}}, r"unknown aspect"),
    ({"text": "ok", "ratings": {"a": 0.5}, "rationales": {"a": [[0.5, 1]]}}, r"integer token"),
    ('{"text": "ok", "ratings": {"a"', r"bad.jsonl:2: not valid JSON .*truncated"),
    ("[1, 2]", r"must be a JSON object"),
])
def test_bad_lines(tmp_path, obj, msg):
    p = _write(tmp_path, {"text": "fine", "ratings": {"a": 0.5}}, obj)
    with pytest.raises(ValueError, match=msg):
        read_jsonl(p, aspects=("a",))


def test_empty_file_without_aspects(tmp_path):
    p = tmp_path / "e.jsonl"
    p.write_text("\n")
    with pytest.raises(ValueError, match="no aspects found"):
        read_jsonl(p)
    assert len(read_jsonl(p, aspects=("a",))) == 0


def test_reviewset_validation():
    with pytest.raises(ValueError, match="empty text"):
        ReviewSet(("a",), [Review([], np.array([0.5]))])
    with pytest.raises(ValueError, match="shape"):
        ReviewSet(("a",), [Review(["x"], np.array([0.5, 0.5]))])
    with pytest.raises(ValueError, match="duplicate"):
        ReviewSet(("a", "a"), [])
    with pytest.raises(ValueError, match="unknown aspect"):
        ReviewSet(("a",), [Review(["x"], np.array([0.5]), {"b": [(0, 1)]})])


def test_spans_and_masks_inverse():
    row = np.array([0, 1, 1, 0, 1, 0, 0, 1], bool)
    spans = mask_to_spans(row)
    assert spans == [(1, 3), (4, 5), (7, 8)]
    np.testing.assert_array_equal(spans_to_mask({"a": spans}, ["a"], 8)[0], row)
    assert mask_to_spans(np.zeros(3, bool)) == []
