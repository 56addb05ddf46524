"""Seed statistics (pure): reliability, top seeds, chi-square, placement, bootstrap CIs.

Failures (``correct is None``) are excluded from every statistic and counted separately.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Observation:
    """One judged image.

    Attributes:
        category: reliability category ("count=3").
        seed: the seed.
        prompt: the prompt text.
        correct: the verdict (None = failure).
        positions: object centroids in [0, 1]^2, if the judge localises.

    """

    category: str
    seed: int
    prompt: str
    correct: bool | None
    positions: tuple[tuple[float, float], ...] | None = None


def observations(rows: Iterable[Mapping]) -> list[Observation]:
    """Observations from mining-result rows (see :mod:`tamis.seeds.mining`)."""
    out = []
    for row in rows:
        verdict = row["verdict"]
        pos = verdict.get("positions")
        out.append(
            Observation(
                category=row["prompt"]["category"],
                seed=int(row["seed"]),
                prompt=row["prompt"]["text"],
                correct=verdict.get("correct"),
                positions=tuple(tuple(p) for p in pos) if pos is not None else None,
            )
        )
    return out


def seed_reliability(obs: Sequence[Observation]) -> dict[str, dict[int, dict]]:
    """Per category, per seed: ``{"correct", "n", "failures", "accuracy"}``.

    ``accuracy`` is correct / n over judged (non-failed) images, None if none was judged.
    """
    table: dict[str, dict[int, dict]] = defaultdict(dict)
    for o in obs:
        cell = table[o.category].setdefault(o.seed, {"correct": 0, "n": 0, "failures": 0})
        if o.correct is None:
            cell["failures"] += 1
        else:
            cell["n"] += 1
            cell["correct"] += int(bool(o.correct))
    for seeds in table.values():
        for cell in seeds.values():
            cell["accuracy"] = cell["correct"] / cell["n"] if cell["n"] else None
    return {c: dict(sorted(s.items())) for c, s in sorted(table.items())}


def top_seeds(reliability: Mapping[str, Mapping[int, Mapping]], n: int = 3) -> dict[str, list[int]]:
    """The ``n`` most reliable seeds per category (ties: more images, then smaller seed).

    Raises:
        ValueError: ``n < 1``.

    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    out = {}
    for category, seeds in reliability.items():
        judged = [(s, c) for s, c in seeds.items() if c["n"] > 0]
        judged.sort(key=lambda sc: (-sc[1]["accuracy"], -sc[1]["n"], sc[0]))
        out[category] = [s for s, _ in judged[:n]]
    return out


def chi_square(obs: Sequence[Observation]) -> dict[str, dict]:
    """Chi-square test of independence seed x correct, per category (no Yates correction).

    Returns per category ``{"chi2", "p", "dof", "cramers_v", "n", "n_seeds"}``. A table where
    every image is correct (or every image wrong) has no variation: chi2 = 0, p = 1, V = 0.
    """
    from scipy.stats import chi2_contingency

    rel = seed_reliability(obs)
    out = {}
    for category, seeds in rel.items():
        table = np.array(
            [[c["correct"], c["n"] - c["correct"]] for c in seeds.values() if c["n"] > 0],
            dtype=float,
        )
        n = int(table.sum())
        if len(table) < 2 or (table.sum(axis=0) == 0).any():
            out[category] = {"chi2": 0.0, "p": 1.0, "dof": max(len(table) - 1, 0),
                             "cramers_v": 0.0, "n": n, "n_seeds": len(table)}
            continue
        chi2, p, dof, _ = chi2_contingency(table, correction=False)
        k = min(table.shape) - 1
        out[category] = {"chi2": float(chi2), "p": float(p), "dof": int(dof),
                         "cramers_v": float(math.sqrt(chi2 / (n * k))), "n": n,
                         "n_seeds": len(table)}
    return out


def accuracy_spread(reliability: Mapping[str, Mapping[int, Mapping]]) -> dict[str, dict]:
    """Per category: min, max, range, mean and (population) std of per-seed accuracies."""
    out = {}
    for category, seeds in reliability.items():
        acc = np.array([c["accuracy"] for c in seeds.values() if c["n"] > 0], dtype=float)
        if acc.size == 0:
            continue
        out[category] = {"min": float(acc.min()), "max": float(acc.max()),
                         "range": float(acc.max() - acc.min()), "mean": float(acc.mean()),
                         "std": float(acc.std()), "n_seeds": int(acc.size)}
    return out


def placement_heatmaps(obs: Sequence[Observation], bins: int = 8) -> dict[int, np.ndarray]:
    """Per seed, a (bins, bins) histogram of object centroids (row = y, column = x)."""
    maps: dict[int, np.ndarray] = {}
    for o in obs:
        if o.positions is None or o.correct is None:
            continue
        h = maps.setdefault(o.seed, np.zeros((bins, bins)))
        for x, y in o.positions:
            i = min(int(y * bins), bins - 1)
            j = min(int(x * bins), bins - 1)
            h[max(i, 0), max(j, 0)] += 1
    return dict(sorted(maps.items()))


def entropy_bits(hist: np.ndarray) -> float:
    """Shannon entropy (bits) of a histogram normalised to a distribution (0 if empty)."""
    total = hist.sum()
    if total <= 0:
        return 0.0
    p = hist.ravel() / total
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def placement_entropy(maps: Mapping[int, np.ndarray]) -> dict:
    """Per-seed and pooled heatmap entropy; a seed that fixes the layout has lower entropy."""
    per_seed = {s: entropy_bits(h) for s, h in maps.items()}
    pooled = entropy_bits(sum(maps.values())) if maps else 0.0
    mean = float(np.mean(list(per_seed.values()))) if per_seed else 0.0
    return {"per_seed": per_seed, "mean_per_seed": mean, "pooled": pooled}


def centroid_variance_explained(obs: Sequence[Observation]) -> dict[str, dict]:
    """Share of the per-image centroid variance explained by the seed (one-way ANOVA).

    Each image's centroid is the mean of its object positions. For x and y:
    ``eta2 = SS_between / SS_total`` and the F test's ``F`` and ``p``.
    """
    from scipy.stats import f_oneway

    groups: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for o in obs:
        if o.positions and o.correct is not None:
            groups[o.seed].append(tuple(np.mean(np.asarray(o.positions, float), axis=0)))
    out = {}
    for axis, name in enumerate(("x", "y")):
        data = [np.array([c[axis] for c in g]) for g in groups.values() if g]
        allv = np.concatenate(data) if data else np.zeros(0)
        ss_total = float(((allv - allv.mean()) ** 2).sum()) if allv.size else 0.0
        ss_between = float(sum(len(g) * (g.mean() - allv.mean()) ** 2 for g in data))
        eta2 = ss_between / ss_total if ss_total > 0 else 0.0
        if len(data) >= 2 and allv.size > len(data) and ss_total > 0:
            f, p = f_oneway(*data)
            f, p = float(f), float(p)
        else:
            f, p = float("nan"), float("nan")
        out[name] = {"eta2": eta2, "F": f, "p": p, "n": int(allv.size), "n_seeds": len(data)}
    return out


def _tally(obs: Sequence[Observation], key: Callable[[Observation], Hashable]) -> dict:
    """(correct, judged) per ``key(observation)``; failures left out."""
    table: dict = defaultdict(lambda: [0, 0])
    for o in obs:
        if o.correct is None:
            continue
        table[key(o)][0] += int(bool(o.correct))
        table[key(o)][1] += 1
    return {k: (c, n) for k, (c, n) in table.items()}


def _per_prompt(obs: Sequence[Observation]) -> dict[str, tuple[int, int]]:
    return _tally(obs, lambda o: o.prompt)


def _cell_grids(
    base: Sequence[Observation], arm: Sequence[Observation]
) -> tuple[list, list, np.ndarray, np.ndarray]:
    """Prompts, seeds and ``(prompts, seeds, 2)`` (correct, judged) grids of both arms.

    Only cells judged in both arms are filled; the others stay 0 in both grids.

    Raises:
        ValueError: no judged (prompt, seed) cell in common.

    """
    cb = _tally(base, lambda o: (o.prompt, o.seed))
    ca = _tally(arm, lambda o: (o.prompt, o.seed))
    common = set(cb) & set(ca)
    if not common:
        raise ValueError("the two arms share no judged (prompt, seed) cell")
    prompts = sorted({p for p, _ in common})
    seeds = sorted({s for _, s in common})
    pi, si = {p: i for i, p in enumerate(prompts)}, {s: i for i, s in enumerate(seeds)}
    b = np.zeros((len(prompts), len(seeds), 2))
    a = np.zeros_like(b)
    for key in common:
        b[pi[key[0]], si[key[1]]] = cb[key]
        a[pi[key[0]], si[key[1]]] = ca[key]
    return prompts, seeds, b, a


def bootstrap_accuracy(
    obs: Sequence[Observation], n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict:
    """Accuracy with a percentile bootstrap CI over prompts (images of a prompt move together).

    Returns ``{"accuracy", "lo", "hi", "n", "n_prompts", "failures"}``.
    """
    table = _per_prompt(obs)
    failures = sum(o.correct is None for o in obs)
    if not table:
        return {"accuracy": None, "lo": None, "hi": None, "n": 0, "n_prompts": 0,
                "failures": failures}
    counts = np.array(list(table.values()), dtype=float)
    acc = counts[:, 0].sum() / counts[:, 1].sum()
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(counts), size=(n_boot, len(counts)))
    boot = counts[idx, 0].sum(axis=1) / counts[idx, 1].sum(axis=1)
    alpha = (1 - level) / 2
    return {"accuracy": float(acc), "lo": float(np.quantile(boot, alpha)),
            "hi": float(np.quantile(boot, 1 - alpha)), "n": int(counts[:, 1].sum()),
            "n_prompts": len(counts), "failures": failures}


def bootstrap_relative_gain(
    base: Sequence[Observation],
    arm: Sequence[Observation],
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """Relative gain (acc_arm - acc_base) / acc_base with a paired bootstrap CI over prompts.

    Only prompts judged in both arms are used; the same resampled prompts enter both. The
    absolute difference acc_arm - acc_base comes with its CI from the same resamples
    (``difference``, ``diff_lo``, ``diff_hi``; finite when the base accuracy is 0).

    Raises:
        ValueError: no prompt in common.

    """
    tb, ta = _per_prompt(base), _per_prompt(arm)
    common = sorted(set(tb) & set(ta))
    if not common:
        raise ValueError("the two arms share no judged prompt")
    b = np.array([tb[p] for p in common], dtype=float)
    a = np.array([ta[p] for p in common], dtype=float)

    def accs(bb: np.ndarray, aa: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return bb[..., 0].sum(-1) / bb[..., 1].sum(-1), aa[..., 0].sum(-1) / aa[..., 1].sum(-1)

    def gain(bb: np.ndarray, aa: np.ndarray) -> np.ndarray:
        acc_b, acc_a = accs(bb, aa)
        with np.errstate(divide="ignore", invalid="ignore"):
            return (acc_a - acc_b) / acc_b

    point = float(gain(b, a))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(common), size=(n_boot, len(common)))
    boot = gain(b[idx], a[idx])
    boot = boot[np.isfinite(boot)]
    boot_b, boot_a = accs(b[idx], a[idx])
    diff = boot_a - boot_b
    acc_b, acc_a = (float(x) for x in accs(b, a))
    alpha = (1 - level) / 2
    lo = float(np.quantile(boot, alpha)) if boot.size else float("nan")
    hi = float(np.quantile(boot, 1 - alpha)) if boot.size else float("nan")
    return {"gain": point, "lo": lo, "hi": hi, "n_prompts": len(common),
            "difference": acc_a - acc_b,
            "diff_lo": float(np.quantile(diff, alpha)),
            "diff_hi": float(np.quantile(diff, 1 - alpha)),
            "acc_base": acc_b, "acc_arm": acc_a}


def two_way_replicates(base: np.ndarray, arm: np.ndarray, w_prompts: np.ndarray,
                       w_seeds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Accuracies of both arms under prompt and seed resampling weights.

    Args:
        base: ``(prompts, seeds, 2)`` array of (correct, judged) per cell.
        arm: the same for the other arm.
        w_prompts: ``(B, prompts)`` times each prompt was drawn in each replicate.
        w_seeds: ``(B, seeds)`` times each seed was drawn.

    Returns:
        ``(acc_base, acc_arm)``, each of shape ``(B,)``: a cell's weight is the product of its
        prompt's and its seed's.

    """
    def acc(x: np.ndarray) -> np.ndarray:
        num = np.einsum("bp,ps,bs->b", w_prompts, x[..., 0], w_seeds)
        den = np.einsum("bp,ps,bs->b", w_prompts, x[..., 1], w_seeds)
        with np.errstate(divide="ignore", invalid="ignore"):
            return num / den

    return acc(base), acc(arm)


def bootstrap_difference_two_way(
    base: Sequence[Observation],
    arm: Sequence[Observation],
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """Paired accuracy difference acc_arm - acc_base, resampling prompts *and* seeds.

    :func:`bootstrap_relative_gain` resamples prompts only, so it treats the evaluation seeds
    as fixed; where the seed changes the outcome (the premise of this package) that CI is too
    narrow for a claim about new seeds. Here prompts and seeds are drawn independently with
    replacement and a cell (prompt, seed) counts with the product of their draws (the
    two-way "pigeonhole" bootstrap, Owen 2007). Only cells judged in both arms enter.

    Returns:
        ``{"difference", "lo", "hi", "gain", "gain_lo", "gain_hi", "acc_base", "acc_arm",
        "n_prompts", "n_seeds", "n_boot"}`` (replicates with an undefined accuracy dropped).

    Raises:
        ValueError: no judged (prompt, seed) cell in common.

    """
    prompts, seeds, b, a = _cell_grids(base, arm)
    rng = np.random.default_rng(seed)
    w_p = rng.multinomial(len(prompts), np.full(len(prompts), 1 / len(prompts)), size=n_boot)
    w_s = rng.multinomial(len(seeds), np.full(len(seeds), 1 / len(seeds)), size=n_boot)
    acc_b, acc_a = two_way_replicates(b, a, w_p.astype(float), w_s.astype(float))
    ok = np.isfinite(acc_b) & np.isfinite(acc_a)
    diff = (acc_a - acc_b)[ok]
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = ((acc_a - acc_b) / acc_b)[ok]
    gain = gain[np.isfinite(gain)]
    alpha = (1 - level) / 2
    pb, pa = b[..., 0].sum() / b[..., 1].sum(), a[..., 0].sum() / a[..., 1].sum()

    def q(x: np.ndarray, level_: float) -> float:
        return float(np.quantile(x, level_)) if x.size else float("nan")

    return {"difference": float(pa - pb), "lo": q(diff, alpha), "hi": q(diff, 1 - alpha),
            "gain": float((pa - pb) / pb) if pb > 0 else float("nan"),
            "gain_lo": q(gain, alpha), "gain_hi": q(gain, 1 - alpha),
            "acc_base": float(pb), "acc_arm": float(pa), "n_prompts": len(prompts),
            "n_seeds": len(seeds), "n_boot": int(ok.sum())}


def per_seed_change(base: Sequence[Observation], arm: Sequence[Observation]) -> dict:
    """How an arm changes each evaluation seed's accuracy, against the base's accuracy there.

    Per seed (over the prompts judged in both arms at that seed): the base's and the arm's
    accuracy. A method that teaches good layouts raises most seeds; one that only undoes the
    seed's effect raises the base's bad seeds and lowers its good ones, which shows as a
    strongly negative correlation between the change and the base's per-seed accuracy and a
    smaller spread of per-seed accuracies. Sampling noise in the base's per-seed accuracy
    alone makes the correlation negative (regression to the mean), so read it against a
    control arm's, not against 0.

    Returns:
        ``{"n_seeds", "better", "worse", "corr_with_base", "sd_base", "sd_arm"}`` (the
        correlation is NaN when either side is constant).

    Raises:
        ValueError: no judged (prompt, seed) cell in common.

    """
    _, seeds, b, a = _cell_grids(base, arm)
    acc_b = b[..., 0].sum(0) / b[..., 1].sum(0)  # cells judged in one arm only are zeros
    acc_a = a[..., 0].sum(0) / a[..., 1].sum(0)
    change = acc_a - acc_b
    constant = change.std() == 0 or acc_b.std() == 0
    corr = float("nan") if constant else float(np.corrcoef(change, acc_b)[0, 1])
    return {"n_seeds": len(seeds), "better": int((change > 0).sum()),
            "worse": int((change < 0).sum()), "corr_with_base": corr,
            "sd_base": float(acc_b.std()), "sd_arm": float(acc_a.std())}
