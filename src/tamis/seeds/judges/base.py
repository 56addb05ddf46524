"""The judge protocol and its verdict."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from tamis.seeds.prompts import Question


@dataclass(frozen=True)
class Verdict:
    """A judge's answer about one image.

    Attributes:
        answer: the judged count, or whether the relation holds; None for a failure.
        correct: whether the image satisfies the question; None iff failure (failures are
            excluded from every statistic).
        raw: the judge's raw output, for the record.
        error: why the call failed.
        positions: object centroids normalised to [0, 1] as (x, y), from judges that localise.
        relation_seen: for spatial questions, the relation the judge saw (obj vs obj2) if it
            can tell (used by caption rectification).

    """

    answer: int | bool | None
    correct: bool | None
    raw: str = ""
    error: str | None = None
    positions: tuple[tuple[float, float], ...] | None = None
    relation_seen: str | None = None

    @property
    def failed(self) -> bool:
        """True for a failure (no answer)."""
        return self.correct is None

    @classmethod
    def of(
        cls,
        question: Question,
        answer: int | bool,
        raw: str = "",
        positions: Sequence[tuple[float, float]] | None = None,
        relation_seen: str | None = None,
    ) -> Verdict:
        """A verdict whose ``correct`` is computed from the question.

        Count questions: ``answer == question.count``; spatial questions: ``answer`` is
        whether the relation holds.
        """
        if question.kind == "count":
            correct = int(answer) == question.count
        else:
            correct = bool(answer)
        pos = tuple((float(x), float(y)) for x, y in positions) if positions is not None else None
        return cls(answer, correct, raw, None, pos, relation_seen)

    @classmethod
    def failure(cls, error: str, raw: str = "") -> Verdict:
        """A failed judgement (recorded, excluded from statistics)."""
        return cls(None, None, raw, error)

    def to_dict(self) -> dict:
        """Plain-dict form (for JSONL records)."""
        return {
            "answer": self.answer,
            "correct": self.correct,
            "raw": self.raw,
            "error": self.error,
            "positions": [list(p) for p in self.positions] if self.positions is not None else None,
            "relation_seen": self.relation_seen,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Verdict:
        """Inverse of :meth:`to_dict`."""
        pos = data.get("positions")
        return cls(
            answer=data.get("answer"),
            correct=data.get("correct"),
            raw=data.get("raw", ""),
            error=data.get("error"),
            positions=tuple((float(x), float(y)) for x, y in pos) if pos is not None else None,
            relation_seen=data.get("relation_seen"),
        )


class Judge(Protocol):
    """Anything that judges images against questions."""

    name: str

    def judge(self, images: np.ndarray, questions: Sequence[Question]) -> list[Verdict]:
        """Judge ``images`` (uint8 array (B, H, W, 3)); one verdict per image."""
        ...
