"""``CNNJudge``: the imperfect MINING judge of the shapes world (a stand-in for a VLM).

A small query-conditioned CNN trained on rendered scenes (augmented with blur, pixel noise and
colour jitter so that it transfers to model samples). The query (object, and for relations the
second object) modulates the 8x8 feature map (FiLM); one head classifies the count of the queried
object (0..5), the other the relation of object 1 to object 2 (left of / right of / on top of /
under / "missing"). It is deliberately a different, weaker judge than the exact checker (the
EVALUATION judge), as the paper mines with CogVLM2 and evaluates with GPT-4o.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tamis._io import atomic_path, write_text_atomic
from tamis.seeds.judges.base import Verdict
from tamis.seeds.prompts import RELATIONS, Question
from tamis.seeds.world.captions import parse_object
from tamis.seeds.world.degrade import degrade
from tamis.seeds.world.render import (
    BACKGROUNDS,
    COLOURS,
    MAX_COUNT,
    SHAPES,
    Shape,
    count_scene,
    place_boxes,
    render,
    spatial_scene,
)

DEFAULT_JUDGE = Path(__file__).resolve().parent.parent / "checkpoints" / "judge_cnn"
REL_CLASSES: tuple[str, ...] = (*RELATIONS, "missing")
_COLOURS, _BGS = list(COLOURS), list(BACKGROUNDS)


def query_vector(obj: tuple[str, str], obj2: tuple[str, str] | None) -> np.ndarray:
    """One-hot query: colour+shape of object 1 and (optionally) of object 2, plus a kind flag."""
    v = np.zeros(2 * (len(COLOURS) + len(SHAPES)) + 1, np.float32)
    n = len(COLOURS) + len(SHAPES)
    for i, o in enumerate((obj, obj2)):
        if o is None:
            continue
        v[i * n + _COLOURS.index(o[0])] = 1
        v[i * n + len(COLOURS) + SHAPES.index(o[1])] = 1
    v[-1] = 1.0 if obj2 is not None else 0.0
    return v


class JudgeNet(nn.Module):
    """Conv trunk (32 -> 8 px), FiLM by the query, two classification heads."""

    def __init__(self, width: int = 32, qdim: int = 17) -> None:
        """Build the network."""
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(3, width // 2, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width // 2, width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU(),
        )
        self.film = nn.Linear(qdim, 2 * width)
        self.post = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(width * 64 + qdim, 128), nn.ReLU())
        self.count_head = nn.Linear(128, MAX_COUNT + 1)
        self.rel_head = nn.Linear(128, len(REL_CLASSES))
        self.config = {"width": width, "qdim": qdim}

    def forward(self, x: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Count logits (B, 6) and relation logits (B, 5) for images in [-1, 1] (B, 3, 32, 32)."""
        h = self.trunk(x)
        g, b = self.film(q).chunk(2, dim=1)
        h = self.post(h * (1 + g[:, :, None, None]) + b[:, :, None, None])
        z = self.fc[2](self.fc[1](torch.cat([self.fc[0](h), q], dim=1)))
        return self.count_head(z), self.rel_head(z)


def _to_input(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


@dataclass(frozen=True)
class JudgeExample:
    """A training example: image, query and labels (count, relation class; -1 = not asked)."""

    image: np.ndarray
    query: np.ndarray
    count: int
    relation: int


def _random_obj(rng: np.random.Generator) -> tuple[str, str]:
    return _COLOURS[int(rng.integers(len(COLOURS)))], SHAPES[int(rng.integers(len(SHAPES)))]


def judge_example(rng: np.random.Generator, augment: bool = True) -> JudgeExample:
    """Draw one labelled scene: half count questions (with distractors), half relations."""
    bg = _BGS[int(rng.integers(len(BACKGROUNDS)))]
    if rng.random() < 0.6:
        obj = _random_obj(rng)
        n = int(rng.integers(0, MAX_COUNT + 1))
        shapes = count_scene(rng, obj[0], obj[1], n) if n > 0 else []
        n_dis = int(rng.integers(0, max(0, MAX_COUNT - n) + 1)) if rng.random() < 0.4 else 0
        n_dis = max(n_dis, 1) if n == 0 else n_dis
        if n_dis:
            others = [o for o in ((c, k) for c in COLOURS for k in SHAPES) if o != obj]
            boxes = place_boxes(rng, n + n_dis)
            if boxes is not None:
                placed = [Shape(s.colour, s.kind, x, y, sz) for s, (x, y, sz)
                          in zip(shapes, boxes[:n], strict=True)]
                for x, y, sz in boxes[n:]:
                    o = others[int(rng.integers(len(others)))]
                    placed.append(Shape(o[0], o[1], x, y, sz))
                shapes = placed
        img, q, cnt, rel = render(shapes, bg), query_vector(obj, None), n, -1
    else:
        a = _random_obj(rng)
        b = _random_obj(rng)
        while b == a:
            b = _random_obj(rng)
        relation = RELATIONS[int(rng.integers(len(RELATIONS)))]
        shapes = spatial_scene(rng, a, relation, b)
        label = REL_CLASSES.index(relation)
        if rng.random() < 0.15:  # one object missing
            shapes = shapes[:1] if rng.random() < 0.5 else shapes[1:]
            label = REL_CLASSES.index("missing")
        img, q, cnt, rel = render(shapes, bg), query_vector(a, b), -1, label
    if augment:
        img = degrade(img, rng, blur=float(rng.uniform(0, 0.9)) * (rng.random() < 0.6),
                      noise=float(rng.uniform(0, 15)), jitter=float(rng.uniform(0, 12)))
    return JudgeExample(img, q, cnt, rel)


class CNNJudge:
    """The CNN as a :class:`~tamis.seeds.judges.base.Judge` (count and relation questions).

    Args:
        net: a trained :class:`JudgeNet`.

    """

    name = "cnn-judge"

    def __init__(self, net: JudgeNet) -> None:
        """Wrap a network (evaluation mode)."""
        self.net = net.eval()

    @classmethod
    def load(cls, path: str | Path = DEFAULT_JUDGE) -> CNNJudge:
        """Load weights written by :meth:`save` (default: the shipped judge).

        Raises:
            FileNotFoundError: no judge at ``path``.

        """
        path = Path(path)
        if not (path / "judge.safetensors").exists():
            raise FileNotFoundError(f"no CNN judge at {path} (expected judge.safetensors)")
        cfg = json.loads((path / "config.json").read_text())
        net = JudgeNet(**cfg["net"])
        net.load_state_dict({k: v.float() for k, v in
                             load_file(str(path / "judge.safetensors")).items()})
        return cls(net)

    def save(self, path: str | Path, meta: dict | None = None) -> None:
        """Write weights (fp16 safetensors) and a config JSON to a folder (atomic files)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        sd = {k: v.half().contiguous() for k, v in self.net.state_dict().items()}
        with atomic_path(path / "judge.safetensors") as tmp:
            save_file(sd, str(tmp))
        write_text_atomic(path / "config.json",
                          json.dumps({"net": self.net.config, "meta": meta or {}}, indent=1))

    @torch.no_grad()
    def predict(self, images: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predicted count and relation-class index per image."""
        c, r = self.net(_to_input(images), torch.from_numpy(queries))
        return c.argmax(1).numpy(), r.argmax(1).numpy()

    def judge(self, images: np.ndarray, questions: Sequence[Question]) -> list[Verdict]:
        """One verdict per image; a question about an unknown object is a recorded failure."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1:] != (32, 32, 3):
            raise ValueError(f"expected uint8 images (B, 32, 32, 3), got shape {images.shape}")
        if len(images) != len(questions):
            raise ValueError(f"{len(images)} images for {len(questions)} questions")
        out: list[Verdict | None] = [None] * len(questions)
        idx, queries = [], []
        for i, q in enumerate(questions):
            try:
                a = parse_object(q.obj)
                b = parse_object(q.obj2) if q.kind == "spatial" and q.obj2 is not None else None
            except ValueError as exc:
                out[i] = Verdict.failure(str(exc))
                continue
            idx.append(i)
            queries.append(query_vector(a, b))
        if idx:
            counts, rels = self.predict(images[idx], np.stack(queries))
            for j, i in enumerate(idx):
                q = questions[i]
                if q.kind == "count":
                    out[i] = Verdict.of(q, int(counts[j]), raw=f"count={int(counts[j])}")
                else:
                    seen = REL_CLASSES[int(rels[j])]
                    out[i] = Verdict.of(q, seen == q.relation, raw=f"relation={seen}",
                                        relation_seen=None if seen == "missing" else seen)
        return [v for v in out if v is not None]
