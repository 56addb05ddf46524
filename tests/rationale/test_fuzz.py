"""Hypothesis fuzzing of the tokenizer, the JSONL reader and the Beer/Hotel loaders."""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tamis.rationale.data import Review, ReviewSet, load_beer, load_hotel, read_jsonl, tokenize
from tamis.rationale.data import write_jsonl as _write

FUZZ = settings(max_examples=25, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(st.text())
def test_tokenize_total(text):
    toks = tokenize(text)
    assert all(t and not any(c.isspace() for c in t) for t in toks)
    assert tokenize(" ".join(toks)) == toks  # idempotent on its own output
    assert (not text.strip()) == (not toks)


@FUZZ
@given(st.lists(st.text(min_size=1, max_size=30), min_size=0, max_size=4))
def test_read_jsonl_never_crashes_unexpectedly(lines):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "f.jsonl"
        p.write_text("\n".join(lines), encoding="utf-8")
        try:
            read_jsonl(p, aspects=("a",))
        except ValueError as e:
            assert "f.jsonl" in str(e) or "aspect" in str(e)


word = st.text(alphabet=st.characters(categories=("L", "N")), min_size=1, max_size=6)


@FUZZ
@given(st.lists(st.tuples(st.lists(word, min_size=1, max_size=6),
                          st.lists(st.one_of(st.none(), st.floats(0, 1)), min_size=2,
                                   max_size=2)), min_size=1, max_size=5))
def test_jsonl_round_trip(rows):
    reviews = [Review(toks, np.array([np.nan if v is None else v for v in ys]),
                      {"a": [(0, len(toks))]}) for toks, ys in rows]
    rs = ReviewSet(("a", "b"), reviews)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "r.jsonl"
        _write(p, rs)
        back = read_jsonl(p, aspects=("a", "b"))
    assert [r.tokens for r in back.reviews] == [r.tokens for r in rs.reviews]
    np.testing.assert_array_equal(back.ratings(), rs.ratings())


@FUZZ
@given(st.lists(st.tuples(st.lists(st.floats(0, 1), min_size=5, max_size=5),
                          st.lists(word, min_size=1, max_size=5)), min_size=1, max_size=4),
       st.binary(max_size=20))
def test_beer_loader_on_valid_and_garbage(rows, garbage):
    text = "".join(" ".join(repr(s) for s in sc) + "\t" + " ".join(t) + "\n" for sc, t in rows)
    rs = load_beer(io.StringIO(text), aspects=("appearance", "overall"))
    assert len(rs) == len(rows)
    np.testing.assert_allclose(rs.ratings(), [[sc[0], sc[4]] for sc, _ in rows])
    try:
        load_beer(io.BytesIO(garbage))
    except ValueError:
        pass


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["0", "1"]), st.lists(word, min_size=1, max_size=5)),
                min_size=1, max_size=4), st.text(max_size=40))
def test_hotel_loader_on_valid_and_garbage(rows, garbage):
    text = "label\ttext\trationale\n" + "".join(
        f"{y}\t{' '.join(t)}\t{' '.join('1' for _ in t)}\n" for y, t in rows)
    rs = load_hotel(io.StringIO(text), "service")
    assert len(rs) == len(rows)
    assert all(rs.gold_masks(i).all() for i in range(len(rs)))
    try:
        load_hotel(io.StringIO(garbage), "service")
    except ValueError:
        pass
    json.dumps(rs.ratings().tolist())
