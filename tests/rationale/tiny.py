"""A trivially learnable review set for the rationale-core tests (imported by them)."""

import numpy as np

from tamis.rationale.data import Review, ReviewSet

ASPECTS = ("look", "smell")
LEVELS = ("awful", "poor", "fine", "good", "great")


def tiny_set(n: int = 300, seed: int = 0, length: int = 12, aspects=ASPECTS) -> ReviewSet:
    """Filler words plus, per aspect, the phrase ``<aspect> <level word>`` at a random place.

    The rating of aspect ``a`` is ``level / 4``; its gold rationale is its two-token phrase.
    """
    rng = np.random.default_rng(seed)
    filler = [f"w{i}" for i in range(20)]
    reviews = []
    for _ in range(n):
        levels = rng.choice([0, 1, 3, 4], len(aspects))
        chunks = [[filler[j]] for j in rng.integers(0, len(filler), length)]
        slots = np.sort(rng.choice(length + 1, len(aspects), replace=False))
        order = rng.permutation(len(aspects))
        for s, a_idx in sorted(zip(slots, order), reverse=True):
            chunks.insert(int(s), [aspects[a_idx], LEVELS[levels[a_idx]], a_idx])
        toks, spans = [], {}
        for c in chunks:
            if len(c) == 3:
                spans[aspects[c[2]]] = [(len(toks), len(toks) + 2)]
                toks.extend(c[:2])
            else:
                toks.extend(c)
        reviews.append(Review(toks, levels / 4.0, spans))
    return ReviewSet(tuple(aspects), reviews)
