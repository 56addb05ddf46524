"""An open-vocabulary detector judge: OWLv2 through transformers, loaded from a LOCAL path.

Counts = boxes of the object's query above a score threshold after per-query NMS; the relation
comes from the best boxes' centres with a margin; box centres fill ``Verdict.positions``.
The box logic is pure (numpy) and tested on mocked boxes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tamis.seeds.errors import JudgeError
from tamis.seeds.judges.base import Verdict
from tamis.seeds.prompts import Question

QUERY = "a photo of a {singular}"


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes ``a`` (N, 4) and ``b`` (M, 4)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Greedy non-maximum suppression; indices kept, by decreasing score."""
    order = list(np.argsort(-np.asarray(scores), kind="stable"))
    keep: list[int] = []
    while order:
        i = order.pop(0)
        keep.append(int(i))
        if order:
            ious = box_iou(boxes[[i]], boxes[order])[0]
            order = [j for j, v in zip(order, ious) if v <= iou]
    return keep


def select_boxes(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    label: int,
    threshold: float,
    iou: float,
) -> list[int]:
    """Indices of ``label``'s boxes scoring above ``threshold``, after NMS."""
    idx = np.flatnonzero((np.asarray(labels) == label) & (np.asarray(scores) > threshold))
    if idx.size == 0:
        return []
    kept = nms(np.asarray(boxes)[idx], np.asarray(scores)[idx], iou)
    return [int(idx[k]) for k in kept]


def relation_of(a: tuple[float, float], b: tuple[float, float], margin: float) -> str | None:
    """The relation of centre ``a`` to centre ``b`` (image y grows downwards), or None.

    The axis with the larger offset decides; offsets within ``margin`` are no relation.
    """
    dx, dy = a[0] - b[0], a[1] - b[1]
    if max(abs(dx), abs(dy)) <= margin:
        return None
    if abs(dx) >= abs(dy):
        return "left of" if dx < 0 else "right of"
    return "on top of" if dy < 0 else "under"


def centre(box: np.ndarray) -> tuple[float, float]:
    """Centre (x, y) of an xyxy box."""
    return (float(box[0] + box[2]) / 2, float(box[1] + box[3]) / 2)


def verdict_from_boxes(
    question: Question,
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    threshold: float = 0.3,
    iou: float = 0.5,
    margin: float = 0.05,
) -> Verdict:
    """The verdict from normalised xyxy boxes, scores and query labels (0 = obj, 1 = obj2)."""
    first = select_boxes(boxes, scores, labels, 0, threshold, iou)
    raw = {"n_boxes": len(first)}
    if question.kind == "count":
        positions = [centre(boxes[i]) for i in first]
        return Verdict.of(question, len(first), raw=json.dumps(raw), positions=positions)
    second = select_boxes(boxes, scores, labels, 1, threshold, iou)
    raw["n_boxes2"] = len(second)
    if not first or not second:
        return Verdict.of(question, False, raw=json.dumps(raw))
    a, b = centre(boxes[first[0]]), centre(boxes[second[0]])
    seen = relation_of(a, b, margin)
    raw["relation_seen"] = seen
    return Verdict.of(
        question,
        seen == question.relation,
        raw=json.dumps(raw),
        positions=[a, b],
        relation_seen=seen,
    )


class DetectorJudge:
    """OWLv2 (``Owlv2ForObjectDetection`` + ``Owlv2Processor``) as a judge."""

    name = "detector"

    def __init__(
        self,
        model,
        processor,
        threshold: float = 0.3,
        iou: float = 0.5,
        margin: float = 0.05,
        device: str = "cpu",
    ):
        """Wrap a loaded model and processor (see :meth:`from_pretrained`)."""
        self.model = model.eval().to(device)
        self.processor = processor
        self.threshold, self.iou, self.margin, self.device = threshold, iou, margin, device

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu", **kwargs) -> DetectorJudge:
        """Load model and processor from a LOCAL directory.

        Raises:
            JudgeError: the directory or its config.json is missing.

        """
        from transformers import Owlv2ForObjectDetection, Owlv2Processor

        path = Path(path)
        if not (path / "config.json").is_file():
            raise JudgeError(f"{path} is not a saved OWLv2 model (config.json is missing)")
        model = Owlv2ForObjectDetection.from_pretrained(str(path), local_files_only=True)
        processor = Owlv2Processor.from_pretrained(str(path), local_files_only=True)
        return cls(model, processor, device=device, **kwargs)

    def detect(self, image: np.ndarray, queries: list[str]):
        """Boxes (P, 4) normalised xyxy, scores (P,) and labels (P,) of one image."""
        import torch

        inputs = self.processor(
            text=[queries],
            images=[np.asarray(image)],
            return_tensors="pt",
            padding="max_length",
            truncation=True,
        )
        with torch.no_grad():
            out = self.model(**{k: v.to(self.device) for k, v in inputs.items()})
        probs = out.logits[0].sigmoid().cpu().numpy()  # (P, Q)
        cx, cy, w, h = out.pred_boxes[0].cpu().numpy().T
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        return np.clip(boxes, 0, 1), probs.max(axis=1), probs.argmax(axis=1)

    def judge(self, images: np.ndarray, questions: Sequence[Question]) -> list[Verdict]:
        """One verdict per image."""
        out = []
        for image, q in zip(images, questions):
            queries = [QUERY.format(singular=q.obj.singular)]
            if q.kind == "spatial":
                queries.append(QUERY.format(singular=q.obj2.singular))
            try:
                boxes, scores, labels = self.detect(image, queries)
            except Exception as err:  # a detector crash is a recorded failure
                out.append(Verdict.failure(f"detector failed: {type(err).__name__}: {err}"))
                continue
            out.append(
                verdict_from_boxes(q, boxes, scores, labels, self.threshold, self.iou, self.margin)
            )
        return out
