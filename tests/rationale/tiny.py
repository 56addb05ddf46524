"""A trivially learnable review set for the rationale-core tests (imported by them)."""

import numpy as np

from tamis.rationale.data import Review, ReviewSet

ASPECTS = ("look", "smell")


def tiny_set(n: int = 300, seed: int = 0, length: int = 12, aspects=ASPECTS) -> ReviewSet:
    """Filler words plus one rating word per aspect (``<aspect><level>``) at random places.

    The rating of aspect ``a`` is ``level / 4`` and its gold rationale is its rating word.
    """
    rng = np.random.default_rng(seed)
    filler = [f"w{i}" for i in range(20)]
    reviews = []
    for _ in range(n):
        toks = [filler[j] for j in rng.integers(0, len(filler), length)]
        levels = rng.choice([0, 1, 3, 4], len(aspects))
        pos = rng.choice(length + len(aspects), len(aspects), replace=False)
        order = np.argsort(pos)
        spans = {}
        for rank, a_idx in enumerate(order):
            p = int(pos[a_idx])
            toks.insert(p, f"{aspects[a_idx]}{levels[a_idx]}")
        for a_idx, a in enumerate(aspects):
            p = toks.index(f"{a}{levels[a_idx]}")
            spans[a] = [(p, p + 1)]
        reviews.append(Review(toks, levels / 4.0, spans))
    return ReviewSet(tuple(aspects), reviews)
