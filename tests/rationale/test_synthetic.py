"""The synthetic multi-aspect corpus: correlation, gold spans, shortcut, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from tamis.rationale.data import (
    _GENERIC,
    _SPECIFIC,
    SyntheticConfig,
    synthetic_ratings,
    synthetic_reviews,
)

ASPECT_WORDS = {
    "appearance": {"pour", "head", "glass", "appearance", "looks", "foam"},
    "aroma": {"nose", "aroma", "smells", "notes"},
    "palate": {"mouthfeel", "body", "carbonation", "palate", "feels"},
}


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.8])
def test_measured_correlation_close_to_rho(rho):
    y = synthetic_ratings(20_000, 3, rho, np.random.default_rng(0))
    c = np.corrcoef(y.T)
    off = c[np.triu_indices(3, 1)]
    assert np.abs(off - rho).max() < 0.03
    assert set(np.unique(y)) <= {0.0, 0.25, 0.5, 0.75, 1.0}
    # levels are equiprobable
    assert np.abs(np.bincount((y[:, 0] * 4).astype(int), minlength=5) / 20_000 - 0.2).max() < 0.02


def _level_of(word, aspect):
    for lv in range(5):
        if word in _GENERIC[lv] or word in _SPECIFIC[aspect][lv]:
            return lv
    return None


def test_gold_spans_point_at_the_aspect_words():
    rs = synthetic_reviews(SyntheticConfig(n_reviews=200, shortcut=0.5, seed=3))
    assert len(rs) == 200 and rs.annotated() == list(range(200))
    for i, r in enumerate(rs.reviews):
        g = rs.gold_masks(i)
        assert g.shape == (3, len(r.tokens)) and not (g.sum(0) > 1).any()  # disjoint
        assert len(r.tokens) <= 128
        for k, a in enumerate(rs.aspects):
            (s, e), = r.rationales[a]
            words = r.tokens[s:e]
            assert set(words) & ASPECT_WORDS[a]
            for b in rs.aspects:
                if b != a:
                    assert not set(words) & (ASPECT_WORDS[b] - ASPECT_WORDS[a])
            levels = {_level_of(w, a) for w in words} - {None}
            assert levels == {int(round(r.ratings[k] * 4))}, (words, r.ratings[k])


def test_gold_word_mode_and_shortcut():
    rs = synthetic_reviews(SyntheticConfig(n_reviews=300, shortcut=1.0, gold="word", seed=1))
    for i, r in enumerate(rs.reviews):
        assert rs.gold_masks(i).sum(1).tolist() == [1, 1, 1]
        # the review opens with the verdict; its word follows the mean rating
        assert r.tokens[0] in ("overall", "all", "my")
        end = r.tokens.index(".") + 1
        lv = int(np.rint(r.ratings.mean() * 4))
        assert set(r.tokens[:end]) & set(_GENERIC[lv])
        assert not rs.gold_masks(i)[:, :end].any()
    rs = synthetic_reviews(SyntheticConfig(n_reviews=300, shortcut=0.0, seed=1))
    assert not any(r.tokens[0] in ("overall", "all", "my") for r in rs.reviews)


def test_determinism_and_seed():
    cfg = SyntheticConfig(n_reviews=50, correlation=0.5, shortcut=0.3, seed=7)
    a, b = synthetic_reviews(cfg), synthetic_reviews(cfg)
    assert [r.tokens for r in a.reviews] == [r.tokens for r in b.reviews]
    np.testing.assert_array_equal(a.ratings(), b.ratings())
    c = synthetic_reviews(SyntheticConfig(n_reviews=50, correlation=0.5, shortcut=0.3, seed=8))
    assert [r.tokens for r in a.reviews] != [r.tokens for r in c.reviews]


def test_max_len_and_four_aspects():
    cfg = SyntheticConfig(n_reviews=100, aspects=("appearance", "aroma", "palate", "taste"),
                          max_len=64, n_filler=(5, 8), shortcut=1.0)
    rs = synthetic_reviews(cfg)
    assert max(len(r.tokens) for r in rs.reviews) <= 64
    assert all(len(r.rationales["taste"]) == 1 for r in rs.reviews)


@pytest.mark.parametrize("kw, msg", [
    ({"correlation": 0.99}, "correlation"),
    ({"shortcut": 1.5}, "shortcut"),
    ({"aspects": ("colour",)}, r"unknown synthetic aspect.*'colour'.*known aspects"),
    ({"max_len": 20}, "too short"),
    ({"gold": "sentence"}, "gold"),
    ({"n_filler": (3, 1)}, "n_filler"),
    ({"mention": -0.1}, "mention"),
])
def test_bad_config(kw, msg):
    with pytest.raises(ValueError, match=msg):
        synthetic_reviews(SyntheticConfig(n_reviews=5, **kw))


def test_sentiment_words_are_unambiguous():
    """A sentiment word has one level and never appears in descriptors, filler or templates."""
    from tamis.rationale import data as d

    level: dict[str, set[int]] = {}
    for lv, ws in enumerate(d._GENERIC):
        for w in ws:
            level.setdefault(w, set()).add(lv)
    for bank in d._SPECIFIC.values():
        for lv, ws in enumerate(bank):
            for w in ws:
                level.setdefault(w, set()).add(lv)
    assert all(len(v) == 1 for v in level.values())
    neutral: set[str] = set()
    for dd in d._DESC.values():
        for opts in dd.values():
            for o in opts:
                neutral |= set(o.split())
    for templates in d._PHRASES.values():
        for t in templates:
            neutral |= set(t.split())
    for f in d._FILLER + d._SHORTCUT + d._PREFIX:
        neutral |= set(f.split())
    assert not set(level) & neutral


def test_unmentioned_aspects_keep_ratings_and_have_no_gold():
    base = SyntheticConfig(n_reviews=400, correlation=0.5, shortcut=0.5, seed=2)
    full = synthetic_reviews(base)
    same = synthetic_reviews(SyntheticConfig(**{**base.__dict__, "mention": 1.0}))
    assert [r.tokens for r in full.reviews] == [r.tokens for r in same.reviews]  # default
    rs = synthetic_reviews(SyntheticConfig(**{**base.__dict__, "mention": 0.6}))
    np.testing.assert_array_equal(rs.ratings(), full.ratings())  # ratings drawn first
    present = np.array([[len(r.rationales[a]) for a in rs.aspects] for r in rs.reviews])
    assert set(np.unique(present)) <= {0, 1}
    assert abs(present.mean() - 0.6) < 0.05
    for i, row in enumerate(present):
        np.testing.assert_array_equal(rs.gold_masks(i).any(1), row.astype(bool))
