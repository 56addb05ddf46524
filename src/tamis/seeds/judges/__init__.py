"""Judges: a count or a relation verdict per image, or a recorded failure (never a guess)."""

from __future__ import annotations

from tamis.seeds.judges.base import Judge, Verdict

__all__ = ["Judge", "Verdict"]
