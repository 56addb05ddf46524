"""tamis.seeds: mine reliable random seeds and fine-tune text-to-image models on them.

The paper (arXiv 2411.18810): the initial noise decides whether a text-to-image model gets counts
and spatial relations right. Mine reliable seeds with a judge, generate a self-curated set with
them, fine-tune the attention query/key projections on it.

Sub-modules are imported lazily (``tamis.seeds.prompts`` is pure; generation, mining and
fine-tuning import torch/diffusers).
"""

from __future__ import annotations

__all__ = ["prompts", "generation", "judges", "records", "mining", "stats", "curate", "finetune"]
