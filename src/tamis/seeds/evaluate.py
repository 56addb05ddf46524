"""Evaluation reports: per-category and per-kind accuracy with bootstrap CIs, relative gains.

Input rows are mining-format results (:mod:`tamis.seeds.mining`), typically produced on the
evaluation prompts and evaluation seeds (disjoint from the mining seeds) with the evaluation
judge (different from the mining judge).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from tamis.seeds import stats

KINDS = {"numerical": "count=", "spatial": "relation="}


def accuracy_report(rows: Sequence[Mapping], n_boot: int = 1000, seed: int = 0) -> dict:
    """``{"categories": {c: acc-CI}, "kinds": {"numerical"|"spatial": acc-CI}}``.

    Each entry is :func:`tamis.seeds.stats.bootstrap_accuracy`'s dict (accuracy, lo, hi, n,
    n_prompts, failures).
    """
    obs = stats.observations(rows)
    report: dict = {"categories": {}, "kinds": {}}
    for c in sorted({o.category for o in obs}):
        sub = [o for o in obs if o.category == c]
        report["categories"][c] = stats.bootstrap_accuracy(sub, n_boot, seed)
    for kind, prefix in KINDS.items():
        sub = [o for o in obs if o.category.startswith(prefix)]
        if sub:
            report["kinds"][kind] = stats.bootstrap_accuracy(sub, n_boot, seed)
    return report


def relative_gains(
    base_rows: Sequence[Mapping], arm_rows: Sequence[Mapping], n_boot: int = 1000, seed: int = 0
) -> dict:
    """Per kind, the relative gain of an arm over the base (paired bootstrap over prompts).

    Each kind also carries ``"two_way"``: the paired difference with a CI resampling prompts
    and seeds (:func:`tamis.seeds.stats.bootstrap_difference_two_way`), for claims about new
    seeds.
    """
    base, arm = stats.observations(base_rows), stats.observations(arm_rows)
    out = {}
    for kind, prefix in KINDS.items():
        b = [o for o in base if o.category.startswith(prefix)]
        a = [o for o in arm if o.category.startswith(prefix)]
        if b and a:
            try:
                out[kind] = stats.bootstrap_relative_gain(b, a, n_boot, seed)
                out[kind]["two_way"] = stats.bootstrap_difference_two_way(b, a, n_boot, seed)
            except ValueError:
                continue
    return out
