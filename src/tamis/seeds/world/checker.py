"""The exact programmatic checker of the shapes world (the evaluation judge).

Pixels are quantised to the nearest palette colour or background tint (one mask per colour);
connected components (``scipy.ndimage.label``, 8-connectivity) smaller than ``min_area`` are
dropped; each blob's shape comes from its fill ratio in the bounding box (square ~1.0, circle
~0.79, triangle ~0.6 at these sizes) plus the top/bottom fill asymmetry that separates an apex-up
triangle from a circle, and an aspect-ratio guard. Relations come from centre differences
(bounding-box centres, as GenEval uses box centres: a triangle's pixel centroid sits below its
box centre) along the relation's axis with a margin (and the axis must dominate). A blob that
matches no shape is *invalid*; the shape-validity rate (share of images whose every blob is a
valid shape) is the quality guard of fine-tuning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from tamis.seeds.judges.base import Verdict
from tamis.seeds.prompts import RELATIONS, Question
from tamis.seeds.world.captions import parse_object
from tamis.seeds.world.render import BACKGROUNDS, COLOURS

_PALETTE = np.array(list(COLOURS.values()) + list(BACKGROUNDS.values()), dtype=float)
_N_COLOURS = len(COLOURS)
_NAMES = list(COLOURS)


@dataclass(frozen=True)
class Blob:
    """One connected component of one colour."""

    colour: str
    kind: str | None  # None: not a valid shape
    area: int
    bbox: tuple[int, int, int, int]  # y0, x0, y1, x1 (exclusive)
    centroid: tuple[float, float]  # (x, y) in pixels

    @property
    def centre(self) -> tuple[float, float]:
        """Bounding-box centre ``(x, y)`` (relations use it, as GenEval uses box centres)."""
        y0, x0, y1, x1 = self.bbox
        return (x0 + x1) / 2, (y0 + y1) / 2


def quantise(image: np.ndarray, max_distance: float = 90.0) -> np.ndarray:
    """Per-pixel colour index (0..4 palette colours) or -1 (background or unclear).

    Args:
        image: uint8 ``(H, W, 3)``.
        max_distance: pixels farther than this (RGB Euclidean) from every palette entry are -1.

    """
    idx, dist = _nearest_palette(image)
    ok = (idx < _N_COLOURS) & (dist <= max_distance)
    return np.where(ok, idx, -1)


def _nearest_palette(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel: index of the nearest palette entry (colours, then tints) and its distance."""
    d = np.linalg.norm(images[..., None, :].astype(float) - _PALETTE, axis=-1)
    idx = d.argmin(-1)
    return idx, np.take_along_axis(d, idx[..., None], -1)[..., 0]


def snap_to_palette(images: np.ndarray) -> np.ndarray:
    """Every pixel replaced by its nearest palette colour or background tint (RGB Euclidean).

    The world's renders use only these colours; a generated image snapped this way keeps its
    layout and shapes but loses the sampler's grain. Used to test whether that grain, rather
    than the composition, is what fine-tuning on self-generated images learns.

    Args:
        images: uint8 ``(H, W, 3)`` or ``(N, H, W, 3)``.

    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 (..., H, W, 3) images, got {images.dtype} "
                         f"{images.shape}")
    return _PALETTE[_nearest_palette(images)[0]].astype(np.uint8)


def classify(mask: np.ndarray) -> str | None:
    """Shape of a blob's bounding-box-cropped boolean mask, or None if no valid shape."""
    h, w = mask.shape
    if min(h, w) < 4 or max(h, w) > 14 or not 0.67 <= w / h <= 1.5:
        return None
    fill = mask.mean()
    top, bottom = mask[: h // 2].mean(), mask[h - h // 2:].mean()
    asym = top / bottom if bottom > 0 else 0.0
    if fill >= 0.93:
        return "square"
    if asym < 0.75 and 0.4 <= fill < 0.8:
        return "triangle"
    if 0.65 <= fill < 0.93 and asym >= 0.75:
        return "circle"
    return None


def blobs(image: np.ndarray, min_area: int = 8, max_distance: float = 90.0) -> list[Blob]:
    """Every coloured connected component of an image (tiny ones dropped)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    q = quantise(image, max_distance)
    out = []
    for ci, name in enumerate(_NAMES):
        labels, n = ndimage.label(q == ci, structure=np.ones((3, 3), dtype=int))
        for j, sl in enumerate(ndimage.find_objects(labels), start=1):
            if sl is None:
                continue
            m = labels[sl] == j
            area = int(m.sum())
            if area < min_area:
                continue
            ys, xs = np.nonzero(m)
            cx, cy = float(xs.mean() + sl[1].start), float(ys.mean() + sl[0].start)
            bbox = (sl[0].start, sl[1].start, sl[0].stop, sl[1].stop)
            out.append(Blob(name, classify(m), area, bbox, (cx, cy)))
    return out


def clumped(image: np.ndarray, colour: str, max_side: int = 10) -> bool:
    """Whether an image holds a clump of ``colour``: a blob wider or taller than one object.

    One object of the world is at most 9 px on a side, so a connected region of one colour
    whose bounding box exceeds ``max_side`` pixels is two or more objects that touch (a "pile",
    ``count_scene(mode="pile")``), which no component counter can count. The layout
    diagnostic of the layout-dependent world.

    Raises:
        ValueError: an unknown colour or a malformed image.

    """
    if colour not in _NAMES:
        raise ValueError(f"unknown colour {colour!r}; expected one of {list(_NAMES)}")
    return any(max(b.bbox[2] - b.bbox[0], b.bbox[3] - b.bbox[1]) > max_side
               for b in blobs(image) if b.colour == colour)


def relation_between(a: tuple[float, float], b: tuple[float, float], margin: float) -> str | None:
    """The relation of centroid ``a`` to ``b`` along the dominant axis, or None if too close."""
    dx, dy = a[0] - b[0], a[1] - b[1]
    if max(abs(dx), abs(dy)) <= margin:
        return None
    if abs(dx) >= abs(dy):
        return "left of" if dx < 0 else "right of"
    return "on top of" if dy < 0 else "under"


class ExactChecker:
    """The shapes world's exact judge (a :class:`~tamis.seeds.judges.base.Judge`).

    Args:
        min_area: blobs with fewer pixels are ignored (sampling speckle).
        margin: minimum centroid difference (pixels) along a relation's axis.
        max_distance: colour quantisation tolerance (RGB Euclidean).

    """

    name = "exact-checker"

    def __init__(self, min_area: int = 8, margin: float = 2.0, max_distance: float = 90.0):
        """Set the tolerances."""
        if min_area < 1 or margin < 0 or max_distance <= 0:
            raise ValueError(f"bad checker tolerances: min_area={min_area}, margin={margin}, "
                             f"max_distance={max_distance}")
        self.min_area, self.margin, self.max_distance = min_area, margin, max_distance

    def blobs(self, image: np.ndarray) -> list[Blob]:
        """Blobs of one image under this checker's tolerances."""
        return blobs(image, self.min_area, self.max_distance)

    def judge_one(self, image: np.ndarray, question: Question) -> Verdict:
        """Judge one image."""
        found = self.blobs(image)
        size = image.shape[1], image.shape[0]
        raw = ";".join(f"{b.colour} {b.kind}@{b.centroid[0]:.1f},{b.centroid[1]:.1f}"
                       for b in found)

        def match(obj) -> list[Blob]:
            colour, kind = parse_object(obj)
            return [b for b in found if b.colour == colour and b.kind == kind]

        def norm(bs: list[Blob]) -> list[tuple[float, float]]:
            return [((b.centroid[0] + 0.5) / size[0], (b.centroid[1] + 0.5) / size[1])
                    for b in bs]

        a = match(question.obj)
        if question.kind == "count":
            return Verdict.of(question, len(a), raw, positions=norm(a))
        if question.kind != "spatial" or question.obj2 is None:
            raise ValueError(f"unsupported question {question!r}")
        if question.relation not in RELATIONS:
            raise ValueError(f"unknown relation {question.relation!r}")
        b = match(question.obj2)
        if not a or not b:
            return Verdict.of(question, False, raw, positions=norm(a + b))
        big_a = max(a, key=lambda z: z.area)
        big_b = max(b, key=lambda z: z.area)
        seen = relation_between(big_a.centre, big_b.centre, self.margin)
        return Verdict.of(question, seen == question.relation, raw,
                          positions=norm([big_a, big_b]), relation_seen=seen)

    def judge(self, images: np.ndarray, questions: Sequence[Question]) -> list[Verdict]:
        """One verdict per image (never a failure: the checker always answers)."""
        images = np.asarray(images)
        if images.ndim != 4 or len(images) != len(questions):
            raise ValueError(f"need (B, H, W, 3) images and B questions, got {images.shape} "
                             f"and {len(questions)}")
        return [self.judge_one(im, q) for im, q in zip(images, questions, strict=True)]

    def valid(self, image: np.ndarray) -> bool:
        """Whether every blob of the image is a valid shape (and there is at least one)."""
        found = self.blobs(image)
        return bool(found) and all(b.kind is not None for b in found)

    def validity_rate(self, images: np.ndarray) -> float:
        """Share of images whose every blob is a valid shape (the quality guard)."""
        images = np.asarray(images)
        if len(images) == 0:
            raise ValueError("validity_rate needs at least one image")
        return float(np.mean([self.valid(im) for im in images]))


def degrade(image: np.ndarray, rng: np.random.Generator, blur: float = 0.0, noise: float = 0.0,
            jitter: int = 0) -> np.ndarray:
    """A degraded copy of a render: Gaussian blur (sigma px), pixel noise (std), shift (px)."""
    x = image.astype(float)
    if jitter:
        dy, dx = (int(v) for v in rng.integers(-jitter, jitter + 1, size=2))
        bg = x[0, 0].copy()
        x = np.roll(x, (dy, dx), axis=(0, 1))
        if dy > 0:
            x[:dy] = bg
        elif dy < 0:
            x[dy:] = bg
        if dx > 0:
            x[:, :dx] = bg
        elif dx < 0:
            x[:, dx:] = bg
    if blur:
        x = ndimage.gaussian_filter(x, sigma=(blur, blur, 0))
    if noise:
        x = x + rng.normal(0, noise, size=x.shape)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)
