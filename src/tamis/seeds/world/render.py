"""The 32x32 shapes world: palette, shapes, scenes and their deterministic renderer.

A scene is a list of :class:`Shape` objects on a light background tint. Shapes are circles,
squares and triangles (6-9 px) in five saturated colours, placed without overlap and with a
one-pixel gap between bounding boxes so that two objects never touch (the checker separates
them by connected components). Everything is drawn from a ``numpy.random.Generator`` and is
therefore reproducible. Counts 1-5 fit on the canvas at the largest size; the prompts use 2-5.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SIZE = 32
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (20, 150, 40),
    "blue": (30, 70, 220),
    "orange": (245, 140, 0),
    "purple": (140, 40, 170),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
# Light tints; each is the world's "background" of a caption ("on a cream background").
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "cream": (240, 230, 200),
    "gray": (205, 205, 205),
    "pale blue": (205, 225, 245),
}
MIN_SIZE, MAX_SIZE = 6, 9
MAX_COUNT = 5
GAP = 1  # free pixels between any two bounding boxes


@dataclass(frozen=True)
class Shape:
    """One object: colour, kind and its bounding box (top-left ``x``, ``y``, side ``size``)."""

    colour: str
    kind: str
    x: int
    y: int
    size: int

    @property
    def centre(self) -> tuple[float, float]:
        """Return the bounding-box centre ``(cx, cy)`` in pixels (y grows downwards)."""
        return self.x + (self.size - 1) / 2, self.y + (self.size - 1) / 2


def shape_mask(kind: str, size: int) -> np.ndarray:
    """Return the boolean ``(size, size)`` mask of a shape.

    Args:
        kind: ``"circle"``, ``"square"`` or ``"triangle"`` (apex up, base at the bottom).
        size: side of the bounding box in pixels.

    Raises:
        ValueError: unknown kind or a size below 3.

    """
    if size < 3:
        raise ValueError(f"shape size must be >= 3, got {size}")
    yy, xx = np.mgrid[0:size, 0:size].astype(float) + 0.5
    c = size / 2
    if kind == "square":
        return np.ones((size, size), dtype=bool)
    if kind == "circle":
        return (xx - c) ** 2 + (yy - c) ** 2 <= c * c
    if kind == "triangle":
        # isosceles, apex at the top centre, base on the bottom row
        half = (yy / size) * c
        return np.abs(xx - c) <= half + 0.25
    raise ValueError(f"unknown shape {kind!r}; expected one of {SHAPES}")


def _overlaps(a: tuple[int, int, int], b: tuple[int, int, int], gap: int = GAP) -> bool:
    ax, ay, asz = a
    bx, by, bsz = b
    return not (ax + asz + gap <= bx or bx + bsz + gap <= ax
                or ay + asz + gap <= by or by + bsz + gap <= ay)


def place_boxes(
    rng: np.random.Generator,
    n: int,
    region: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0),
    sizes: list[int] | None = None,
    tries: int = 40,
) -> list[tuple[int, int, int]] | None:
    """Place ``n`` non-overlapping square boxes, centres drawn uniformly in a region.

    Args:
        rng: random generator.
        n: number of boxes.
        region: ``(x0, y0, x1, y1)`` as fractions of the canvas for the box centres.
        sizes: side of each box (default: uniform in 6..9).
        tries: attempts per box before giving up.

    Returns:
        ``[(x, y, size), ...]`` or ``None`` when the boxes do not fit.

    """
    if sizes is None:
        sizes = [int(s) for s in rng.integers(MIN_SIZE, MAX_SIZE + 1, size=n)]
    boxes: list[tuple[int, int, int]] = []
    x0, y0, x1, y1 = region
    for s in sizes:
        for _ in range(tries):
            cx = rng.uniform(x0, x1) * SIZE
            cy = rng.uniform(y0, y1) * SIZE
            x = int(np.clip(round(cx - s / 2), 0, SIZE - s))
            y = int(np.clip(round(cy - s / 2), 0, SIZE - s))
            if all(not _overlaps((x, y, s), b) for b in boxes):
                boxes.append((x, y, s))
                break
        else:
            return None
    return boxes


def render(shapes: list[Shape], background: str = "white") -> np.ndarray:
    """Render a scene to a uint8 ``(32, 32, 3)`` image.

    Raises:
        ValueError: unknown colour/background, or a shape outside the canvas.

    """
    if background not in BACKGROUNDS:
        raise ValueError(f"unknown background {background!r}; expected one of {list(BACKGROUNDS)}")
    img = np.empty((SIZE, SIZE, 3), dtype=np.uint8)
    img[:] = BACKGROUNDS[background]
    for s in shapes:
        if s.colour not in COLOURS:
            raise ValueError(f"unknown colour {s.colour!r}; expected one of {list(COLOURS)}")
        if s.x < 0 or s.y < 0 or s.x + s.size > SIZE or s.y + s.size > SIZE:
            raise ValueError(f"shape {s} lies outside the {SIZE}x{SIZE} canvas")
        m = shape_mask(s.kind, s.size)
        img[s.y:s.y + s.size, s.x:s.x + s.size][m] = COLOURS[s.colour]
    return img


# Layout modes of the "web-like" pretraining data: regions for the object centres, drawn with
# biased probabilities, so layouts cluster in a few modes (as photographs follow a few
# compositions) and the initial noise of the model tends to pick one of them.
LAYOUT_MODES: dict[str, tuple[tuple[float, float, float, float], float]] = {
    "top band": ((0.12, 0.12, 0.88, 0.42), 0.25),
    "bottom band": ((0.12, 0.58, 0.88, 0.88), 0.20),
    "left column": ((0.12, 0.12, 0.42, 0.88), 0.15),
    "centre": ((0.25, 0.25, 0.75, 0.75), 0.25),
    "anywhere": ((0.12, 0.12, 0.88, 0.88), 0.15),
}


PILE_MAX_OVERLAP = 3  # pixels two neighbours of a pile may overlap along the joining axis


def pile_boxes(rng: np.random.Generator, n: int, tries: int = 200
               ) -> list[tuple[int, int, int]] | None:
    """Place ``n`` boxes as one touching clump (a "pile", as in cluttered photographs).

    Each box after the first is put against a box already placed, on a random side, touching
    or overlapping it by up to :data:`PILE_MAX_OVERLAP` pixels, and may overlap no box by more
    than ``PILE_MAX_OVERLAP + 1`` pixels along its narrower axis. Same-coloured objects of a
    pile form one connected region, so no checker that separates objects by connected
    components can count them: the layout itself, not the drawing, makes such an image wrong.

    Returns:
        ``[(x, y, size), ...]`` or ``None`` when the clump does not fit on the canvas.

    """
    sizes = [int(s) for s in rng.integers(MIN_SIZE, MAX_SIZE + 1, size=n)]
    s0 = sizes[0]
    cx, cy = rng.uniform(0.3, 0.7, size=2) * SIZE
    boxes = [(int(round(cx - s0 / 2)), int(round(cy - s0 / 2)), s0)]
    for s in sizes[1:]:
        for _ in range(tries):
            bx, by, bs = boxes[int(rng.integers(len(boxes)))]
            lap = int(rng.integers(0, PILE_MAX_OVERLAP + 1))
            side = int(rng.integers(4))
            slide = int(rng.integers(-(s // 2), bs - s // 2 + 1))
            if side == 0:
                x, y = bx - s + lap, by + slide
            elif side == 1:
                x, y = bx + bs - lap, by + slide
            elif side == 2:
                x, y = bx + slide, by - s + lap
            else:
                x, y = bx + slide, by + bs - lap
            if x < 0 or y < 0 or x + s > SIZE or y + s > SIZE:
                continue
            if all(not _overlaps((x, y, s), b, gap=-PILE_MAX_OVERLAP - 1) for b in boxes):
                boxes.append((x, y, s))
                break
        else:
            return None
    return boxes


def count_scene(
    rng: np.random.Generator, colour: str, kind: str, count: int, mode: str | None = None
) -> list[Shape]:
    """Draw a scene of exactly ``count`` objects of one colour and kind.

    The layout mode is drawn from :data:`LAYOUT_MODES` unless given; when the objects do not fit
    in the mode's region the region widens to the whole canvas. ``mode="pile"`` draws one
    touching clump (:func:`pile_boxes`) instead, for the cluttered-web pretraining variant
    (``CaptionConfig(pile_share=...)``); shapes of a pile may overlap.

    Raises:
        ValueError: a count outside 1..5 or an unknown mode.

    """
    if not 1 <= count <= MAX_COUNT:
        raise ValueError(f"count must be in 1..{MAX_COUNT}, got {count}")
    if mode == "pile":
        for _ in range(20):
            piled = pile_boxes(rng, count)
            if piled is not None:
                return [Shape(colour, kind, x, y, s) for x, y, s in piled]
        mode = "anywhere"  # pragma: no cover - a clump of 5 at most always fits
    if mode is None:
        names = list(LAYOUT_MODES)
        p = np.array([LAYOUT_MODES[m][1] for m in names])
        mode = names[int(rng.choice(len(names), p=p / p.sum()))]
    if mode not in LAYOUT_MODES:
        raise ValueError(
            f"unknown layout mode {mode!r}; expected one of {list(LAYOUT_MODES) + ['pile']}"
        )
    boxes = None
    for region in (LAYOUT_MODES[mode][0], LAYOUT_MODES["anywhere"][0], (0.0, 0.0, 1.0, 1.0)):
        for _ in range(3):
            boxes = place_boxes(rng, count, region)
            if boxes is not None:
                break
        if boxes is not None:
            break
    if boxes is None:  # pragma: no cover - smallest sizes always fit
        boxes = place_boxes(rng, count, (0.0, 0.0, 1.0, 1.0), sizes=[MIN_SIZE] * count)
        assert boxes is not None
    return [Shape(colour, kind, x, y, s) for x, y, s in boxes]


RELATION_AXES = {"left of": (0, -1), "right of": (0, 1), "on top of": (1, -1), "under": (1, 1)}
MARGIN = 4.0  # pixels: the centroid difference along the relation's axis must exceed this


def spatial_scene(
    rng: np.random.Generator,
    a: tuple[str, str],
    relation: str,
    b: tuple[str, str],
) -> list[Shape]:
    """Draw two objects ``a`` and ``b`` (``(colour, kind)``) with ``a <relation> b``.

    The relation holds along its dominant axis: the centroid difference along that axis exceeds
    :data:`MARGIN` and is larger than the difference along the other axis.

    Raises:
        ValueError: an unknown relation or identical objects.

    """
    if relation not in RELATION_AXES:
        raise ValueError(f"unknown relation {relation!r}; expected one of {list(RELATION_AXES)}")
    if a == b:
        raise ValueError(f"a spatial scene needs two different objects, got {a} twice")
    axis, sign = RELATION_AXES[relation]
    while True:
        boxes = place_boxes(rng, 2, (0.12, 0.12, 0.88, 0.88))
        if boxes is None:
            continue
        (ax, ay, asz), (bx, by, bsz) = boxes
        ca = np.array([ax + asz / 2, ay + asz / 2])
        cb = np.array([bx + bsz / 2, by + bsz / 2])
        d = ca - cb  # a minus b; "left of": d[0] < 0
        along, across = sign * d[axis], d[1 - axis]
        if along > MARGIN and abs(along) > abs(across):
            return [Shape(a[0], a[1], ax, ay, asz), Shape(b[0], b[1], bx, by, bsz)]
