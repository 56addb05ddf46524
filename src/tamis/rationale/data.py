"""Multi-aspect review data: the JSONL format, the Beer / Hotel loaders, a synthetic corpus.

**The JSONL format** (one review per line, UTF-8)::

    {"text": "pours a hazy amber ...", "tokens": ["pours", "a", ...],
     "ratings": {"appearance": 0.8, "aroma": 0.6, "palate": null},
     "rationales": {"appearance": [[0, 6]], "aroma": [[9, 15], [20, 22]]}}

- ``tokens`` (optional) wins over ``text``; without it the text is split by :func:`tokenize`.
  A line needs one of them, and at least one token (an empty text is an error).
- ``ratings`` (required): aspect -> score in ``[0, 1]``; ``null`` or an absent aspect is a
  missing rating (NaN). A line without ``ratings`` is an error naming the file and line.
- ``rationales`` (optional): aspect -> token spans ``[start, end)`` (0-based, end exclusive)
  into the token list. A review with a ``rationales`` object is *annotated*: its aspects
  without spans have an empty gold rationale.
- Aspect names outside the aspect set are an error naming them and the known ones. Without
  an explicit ``aspects`` argument the set is the ratings' keys, in first-seen order.

Ratings live in ``[0, 1]`` (Beer's 0-5 stars divided by 5 in Lei et al.'s release). Gold
masks are ``(K, L)`` boolean arrays in the ``aspects`` order (:meth:`ReviewSet.gold_masks`).
"""

from __future__ import annotations

import functools
import gzip
import io
import json
import math
import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np

from tamis._io import write_text_atomic

__all__ = [
    "BEER_ASPECTS",
    "HOTEL_ASPECTS",
    "Review",
    "ReviewSet",
    "SyntheticConfig",
    "load_beer",
    "load_hotel",
    "read_jsonl",
    "synthetic_reviews",
    "tokenize",
    "write_jsonl",
]

BEER_ASPECTS = ("appearance", "aroma", "palate", "taste", "overall")
HOTEL_ASPECTS = ("location", "service", "cleanliness")

_TOKEN = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]", re.UNICODE)


def tokenize(text: str) -> list[str]:
    """Lower-case ``text`` and split it into words and single punctuation marks.

    A word is a run of letters/digits/underscores, with inner apostrophes kept
    (``"don't"``); every other non-space character is a token of its own.

    Args:
        text: any string.

    Returns:
        The tokens, in order (``[]`` for an empty or blank text).

    """
    if not isinstance(text, str):
        raise TypeError(f"tokenize expects a str, got {type(text).__name__}")
    return _TOKEN.findall(text.lower())


# ---------------------------------------------------------------------- containers
Spans = list[tuple[int, int]]


@dataclass
class Review:
    """One review.

    Attributes:
        tokens: the tokens.
        ratings: ``(K,)`` float scores in ``[0, 1]``; NaN marks a missing rating.
        rationales: aspect -> gold token spans ``[start, end)``; ``None`` if unannotated.

    """

    tokens: list[str]
    ratings: np.ndarray
    rationales: dict[str, Spans] | None = None


@dataclass
class ReviewSet:
    """Reviews sharing one ordered aspect set.

    Attributes:
        aspects: the aspect names; ``Review.ratings`` follow this order.
        reviews: the reviews.

    """

    aspects: tuple[str, ...]
    reviews: list[Review] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.aspects = tuple(self.aspects)
        if not self.aspects:
            raise ValueError("a ReviewSet needs at least one aspect")
        if len(set(self.aspects)) != len(self.aspects):
            raise ValueError(f"duplicate aspect names in {self.aspects}")
        for i, r in enumerate(self.reviews):
            _check_review(r, self.aspects, f"review {i}")

    def __len__(self) -> int:
        return len(self.reviews)

    def ratings(self) -> np.ndarray:
        """The ``(N, K)`` float rating matrix (NaN = missing)."""
        if not self.reviews:
            return np.zeros((0, len(self.aspects)))
        return np.stack([np.asarray(r.ratings, dtype=float) for r in self.reviews])

    def gold_masks(self, i: int) -> np.ndarray | None:
        """The ``(K, L_i)`` boolean gold mask of review ``i``, or ``None`` if unannotated."""
        r = self.reviews[i]
        if r.rationales is None:
            return None
        return spans_to_mask(r.rationales, self.aspects, len(r.tokens))

    def annotated(self) -> list[int]:
        """Indices of the reviews that carry gold rationales."""
        return [i for i, r in enumerate(self.reviews) if r.rationales is not None]

    def token_lists(self) -> list[list[str]]:
        """The reviews' token lists."""
        return [r.tokens for r in self.reviews]

    def subset(self, indices: Iterable[int]) -> ReviewSet:
        """A new set with the reviews at ``indices`` (shared objects, same aspects)."""
        return ReviewSet(self.aspects, [self.reviews[i] for i in indices])


def spans_to_mask(rationales: dict[str, Spans], aspects: Sequence[str], length: int) -> np.ndarray:
    """``(K, length)`` boolean mask from aspect -> ``[start, end)`` spans."""
    mask = np.zeros((len(aspects), length), dtype=bool)
    for k, a in enumerate(aspects):
        for s, e in rationales.get(a, []):
            mask[k, s:e] = True
    return mask


def mask_to_spans(row: np.ndarray) -> Spans:
    """The maximal ``[start, end)`` runs of True in a 1-D boolean array."""
    row = np.asarray(row, dtype=bool)
    padded = np.concatenate([[False], row, [False]]).astype(np.int8)
    d = np.diff(padded)
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    return [(int(s), int(e)) for s, e in zip(starts, ends)]


def _check_review(r: Review, aspects: tuple[str, ...], where: str) -> None:
    if not isinstance(r.tokens, list) or not all(isinstance(t, str) for t in r.tokens):
        raise ValueError(f"{where}: tokens must be a list of strings")
    if len(r.tokens) == 0:
        raise ValueError(f"{where}: empty text (no tokens)")
    y = np.asarray(r.ratings, dtype=float)
    if y.shape != (len(aspects),):
        raise ValueError(f"{where}: ratings have shape {y.shape}, expected ({len(aspects)},) "
                         f"for aspects {aspects}")
    ok = np.isnan(y) | ((y >= 0) & (y <= 1))
    if not ok.all():
        raise ValueError(f"{where}: ratings must lie in [0, 1] (or NaN), got {y.tolist()}")
    r.ratings = y
    if r.rationales is not None:
        unknown = [a for a in r.rationales if a not in aspects]
        if unknown:
            raise ValueError(f"{where}: unknown aspect(s) {unknown} in rationales; "
                             f"known aspects: {list(aspects)}")
        for a, spans in r.rationales.items():
            for s, e in spans:
                if not (0 <= s < e <= len(r.tokens)):
                    raise ValueError(f"{where}: rationale span [{s}, {e}) for {a!r} is outside "
                                     f"the {len(r.tokens)} tokens (or empty)")


# ---------------------------------------------------------------------- JSONL
def _parse_spans(value: object, where: str, aspect: str) -> Spans:
    if not isinstance(value, list):
        raise ValueError(f"{where}: rationales[{aspect!r}] must be a list of [start, end] spans")
    spans: Spans = []
    for sp in value:
        if (not isinstance(sp, (list, tuple)) or len(sp) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in sp)):
            raise ValueError(f"{where}: rationale span {sp!r} for {aspect!r} is not [start, end] "
                             "with integer token indices")
        spans.append((int(sp[0]), int(sp[1])))
    return spans


def _parse_rating(value: object, where: str, aspect: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: rating for {aspect!r} must be a number or null, got {value!r}")
    v = float(value)
    if math.isnan(v):
        return v
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{where}: rating for {aspect!r} is {v}, outside [0, 1]")
    return v


def read_jsonl(path: str | Path, aspects: Sequence[str] | None = None) -> ReviewSet:
    """Read reviews in the documented JSONL format (module docstring).

    Args:
        path: the ``.jsonl`` file (``.gz`` accepted).
        aspects: the aspect order; default: the ratings' keys in first-seen order.

    Returns:
        The :class:`ReviewSet`.

    Raises:
        ValueError: naming the file and line, for malformed JSON (e.g. a truncated last line),
            a line without ``ratings``, an empty text, an unknown aspect, a bad span or rating.

    """
    path = Path(path)
    rows: list[tuple[str, dict]] = []
    with _open_text(path) as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not valid JSON ({e.msg}; truncated file?)") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{where}: a line must be a JSON object")
            if "ratings" not in obj:
                raise ValueError(f"{where}: line has no 'ratings' (aspect -> score in [0, 1])")
            if not isinstance(obj["ratings"], dict):
                raise ValueError(f"{where}: 'ratings' must be an object aspect -> score")
            rows.append((where, obj))
    if aspects is None:
        seen: dict[str, None] = {}
        for _, obj in rows:
            for a in obj["ratings"]:
                seen.setdefault(str(a), None)
        aspects = tuple(seen)
        if not aspects:
            raise ValueError(f"{path}: no aspects found (empty file or empty 'ratings')")
    aspects = tuple(aspects)
    reviews = []
    for where, obj in rows:
        if "tokens" in obj:
            toks = obj["tokens"]
            if not isinstance(toks, list) or not all(isinstance(t, str) for t in toks):
                raise ValueError(f"{where}: 'tokens' must be a list of strings")
        elif "text" in obj:
            if not isinstance(obj["text"], str):
                raise ValueError(f"{where}: 'text' must be a string")
            toks = tokenize(obj["text"])
        else:
            raise ValueError(f"{where}: line has neither 'text' nor 'tokens'")
        if not toks:
            raise ValueError(f"{where}: empty text (no tokens)")
        unknown = [a for a in obj["ratings"] if a not in aspects]
        if unknown:
            raise ValueError(f"{where}: unknown aspect(s) {unknown}; known aspects: "
                             f"{list(aspects)}")
        y = np.array([_parse_rating(obj["ratings"].get(a), where, a) for a in aspects])
        rat = None
        if obj.get("rationales") is not None:
            if not isinstance(obj["rationales"], dict):
                raise ValueError(f"{where}: 'rationales' must be an object aspect -> spans")
            rat = {str(a): _parse_spans(v, where, str(a)) for a, v in obj["rationales"].items()}
        review = Review(list(toks), y, rat)
        _check_review(review, aspects, where)
        reviews.append(review)
    return ReviewSet(aspects, reviews)


def write_jsonl(path: str | Path, reviews: ReviewSet) -> None:
    """Write ``reviews`` in the JSONL format, atomically (tokens kept, so reading is exact)."""
    lines = []
    for r in reviews.reviews:
        obj: dict = {
            "text": " ".join(r.tokens),
            "tokens": r.tokens,
            "ratings": {a: (None if math.isnan(v) else float(v))
                        for a, v in zip(reviews.aspects, np.asarray(r.ratings, dtype=float))},
        }
        if r.rationales is not None:
            obj["rationales"] = {a: [[int(s), int(e)] for s, e in sp]
                                 for a, sp in r.rationales.items()}
        lines.append(json.dumps(obj, ensure_ascii=False))
    write_text_atomic(path, "".join(line + "\n" for line in lines))


# ---------------------------------------------------------------------- Beer / Hotel
def _open_text(src: str | Path | IO) -> IO[str]:
    """A text handle on a path or file object, transparently un-gzipping (by magic bytes).

    Raises ``ValueError`` naming the source for a truncated / corrupt gzip stream or bytes
    that are not UTF-8.
    """
    name = getattr(src, "name", None) or str(src)
    if hasattr(src, "read"):
        if isinstance(src, io.TextIOBase):
            return src  # type: ignore[return-value]
        raw = src.read()  # type: ignore[union-attr]
        if isinstance(raw, str):
            return io.StringIO(raw)
    else:
        with open(Path(src), "rb") as f:
            raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as e:
            raise ValueError(f"{name}: truncated or corrupt gzip file ({e})") from None
    try:
        return io.StringIO(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"{name}: not UTF-8 text ({e})") from None


def _select_aspects(aspects: Sequence[str] | str, known: tuple[str, ...]) -> tuple[str, ...]:
    sel = (aspects,) if isinstance(aspects, str) else tuple(aspects)
    unknown = [a for a in sel if a not in known]
    if unknown or not sel:
        raise ValueError(f"unknown aspect(s) {unknown or list(sel)}; known aspects: {list(known)}")
    return sel


def load_beer(
    path_or_file: str | Path | IO,
    aspects: Sequence[str] | str = ("appearance", "aroma", "palate"),
    lowercase: bool = True,
) -> ReviewSet:
    """Read a BeerAdvocate file of Lei et al. (2016): the ratings text format or annotations.

    Two formats, told apart by the first non-blank line (``.gz`` or plain, path or handle):

    - **text** (``reviews.aspect{0,1,2}.*.txt.gz``, ``reviews.260k.*.txt.gz``): per line five
      scores in ``[0, 1]`` (appearance, aroma, palate, taste, overall, separated by spaces),
      a tab, then the already tokenised text (split on whitespace). Unannotated.
    - **annotations** (``annotations.json``, starts with ``{``): one JSON object per line with
      tokens ``x``, the five scores ``y`` and, keyed ``"0"`` .. ``"4"`` by aspect index, lists
      of token spans ``[start, end)``. Annotated: an aspect without a key has no gold tokens.

    Args:
        path_or_file: the file.
        aspects: the aspects to keep, by name (:data:`BEER_ASPECTS`).
        lowercase: lower-case the tokens (GloVe is lower-case; the release already is).

    Returns:
        The :class:`ReviewSet` over ``aspects``.

    Raises:
        ValueError: an unknown aspect (naming it and the known ones), or a malformed line
            (naming the file and line).

    """
    sel = _select_aspects(aspects, BEER_ASPECTS)
    cols = [BEER_ASPECTS.index(a) for a in sel]
    name = getattr(path_or_file, "name", None) or str(path_or_file)
    reviews: list[Review] = []
    with _open_text(path_or_file) as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{name}:{n}"
            if line.lstrip().startswith("{"):
                reviews.append(_beer_annotation(line, where, sel, cols, lowercase))
            else:
                reviews.append(_beer_text(line, where, cols, lowercase))
    return ReviewSet(sel, reviews)


def _scores(values: Sequence[object], where: str, n: int = 5) -> np.ndarray:
    if len(values) != n:
        raise ValueError(f"{where}: expected {n} scores, found {len(values)}")
    try:
        y = np.array([float(v) for v in values])  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{where}: scores must be numbers, got {list(values)}") from None
    if not ((y >= 0) & (y <= 1)).all():
        raise ValueError(f"{where}: scores must lie in [0, 1], got {y.tolist()}")
    return y


def _beer_text(line: str, where: str, cols: list[int], lowercase: bool) -> Review:
    if "\t" not in line:
        raise ValueError(f"{where}: expected '<5 scores>\\t<text>' (no tab found)")
    head, text = line.rstrip("\n").split("\t", 1)
    y = _scores(head.split(), where)
    toks = text.split()
    if lowercase:
        toks = [t.lower() for t in toks]
    if not toks:
        raise ValueError(f"{where}: empty text (no tokens)")
    return Review(toks, y[cols])


def _beer_annotation(line: str, where: str, sel: tuple[str, ...], cols: list[int],
                     lowercase: bool) -> Review:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not valid JSON ({e.msg}; truncated file?)") from None
    if not isinstance(obj, dict) or "x" not in obj or "y" not in obj:
        raise ValueError(f"{where}: an annotation line needs tokens 'x' and scores 'y'")
    toks = obj["x"]
    if not isinstance(toks, list) or not all(isinstance(t, str) for t in toks) or not toks:
        raise ValueError(f"{where}: 'x' must be a non-empty list of token strings")
    if lowercase:
        toks = [t.lower() for t in toks]
    y = _scores(obj["y"] if isinstance(obj["y"], list) else [obj["y"]], where)
    rat = {a: _parse_spans(obj.get(str(c), []), where, a) for a, c in zip(sel, cols)}
    return Review(list(toks), y[cols], rat)


def load_hotel(path: str | Path | IO, aspect: str) -> ReviewSet:
    """Read one aspect file of the TripAdvisor hotel data in the R2A layout (Bao et al. 2018).

    Files ``hotel_{Location,Service,Cleanliness}.{train,dev}`` hold one aspect each. The
    assumed layout (the real files are not available offline to check it): tab-separated
    columns with a header row naming at least ``label`` and ``text`` and optionally
    ``rationale``; without a header, the columns are ``label``, ``text`` [, ``rationale``].

    - ``label``: ``0`` / ``1`` (negative / positive) or a score in ``[0, 1]``.
    - ``text``: already tokenised, split on whitespace, lower-cased.
    - ``rationale`` (annotated files): one ``0``/``1`` per token; a review with this column is
      annotated (all zeros = annotated, no gold tokens); an empty cell = unannotated.

    Args:
        path: the file (``.gz`` or plain, path or handle).
        aspect: ``"location"``, ``"service"`` or ``"cleanliness"`` (case-insensitive).

    Returns:
        A one-aspect :class:`ReviewSet`.

    Raises:
        ValueError: an unknown aspect, or a malformed row (naming file and line).

    """
    a = aspect.lower() if isinstance(aspect, str) else aspect
    sel = _select_aspects(a, HOTEL_ASPECTS)
    name = getattr(path, "name", None) or str(path)
    reviews: list[Review] = []
    with _open_text(path) as fh:
        columns = ["label", "text", "rationale"]
        first = True
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            cells = line.rstrip("\n").rstrip("\r").split("\t")
            if first:
                first = False
                low = [c.strip().lower() for c in cells]
                if "label" in low and "text" in low:
                    columns = low
                    continue
            where = f"{name}:{n}"
            if len(cells) < 2:
                raise ValueError(f"{where}: expected tab-separated label and text")
            row = dict(zip(columns, cells))
            if "label" not in row or "text" not in row:
                raise ValueError(f"{where}: missing 'label' or 'text' column")
            try:
                y = float(row["label"])
            except ValueError:
                raise ValueError(f"{where}: label {row['label']!r} is not a number") from None
            if not 0.0 <= y <= 1.0:
                raise ValueError(f"{where}: label {y} is outside [0, 1] (expected 0/1)")
            toks = [t.lower() for t in row["text"].split()]
            if not toks:
                raise ValueError(f"{where}: empty text (no tokens)")
            rat = None
            mark = row.get("rationale", "").split()
            if mark:
                if len(mark) != len(toks) or any(m not in ("0", "1") for m in mark):
                    raise ValueError(f"{where}: rationale must be one 0/1 per token "
                                     f"({len(toks)} tokens, {len(mark)} marks)")
                rat = {sel[0]: mask_to_spans(np.array([m == "1" for m in mark]))}
            reviews.append(Review(toks, np.array([y]), rat))
    return ReviewSet(sel, reviews)


# ---------------------------------------------------------------------- synthetic corpus
LEVELS = 5  # ratings 0..4 stars, mapped to {0, .25, .5, .75, 1}

# Sentiment words by level (0 = worst .. 4 = best). Generic words serve every aspect (and the
# shortcut sentence), so only the context tells which aspect they rate.
_GENERIC = (
    ("terrible", "awful", "horrible", "bad"),
    ("poor", "weak", "disappointing", "lacking"),
    ("okay", "average", "mediocre", "passable"),
    ("good", "pleasant", "solid", "fine"),
    ("excellent", "fantastic", "amazing", "wonderful"),
)
_SPECIFIC = {
    "appearance": (("ugly", "murky", "unattractive"), ("dull", "cloudy", "flat"),
                   ("plain", "ordinary", "unremarkable"), ("pretty", "attractive", "appealing"),
                   ("gorgeous", "beautiful", "stunning")),
    "aroma": (("stinky", "foul", "rotten"), ("faint", "stale", "musty"),
              ("modest", "mild", "subtle"), ("fragrant", "fresh", "inviting"),
              ("aromatic", "intoxicating", "heavenly")),
    "palate": (("watery", "harsh", "astringent"), ("flabby", "prickly", "sticky"),
               ("adequate", "passable", "unremarkable"), ("smooth", "balanced", "lively"),
               ("silky", "velvety", "luscious")),
    "taste": (("sour", "metallic", "acrid"), ("bland", "muted", "bitter"),
              ("simple", "mild", "ordinary"), ("tasty", "flavorful", "rich"),
              ("delicious", "superb", "delightful")),
}
# Neutral descriptors (no rating information): they make each aspect's phrase recognisable.
_DESC = {
    "appearance": {
        "color": ("hazy amber", "golden", "copper", "pale straw", "dark brown", "deep ruby",
                  "orange", "black", "clear gold", "reddish"),
        "head": ("thick white", "thin off-white", "creamy tan", "fluffy beige", "small white",
                 "foamy", "frothy", "dense"),
    },
    "aroma": {
        "note": ("citrus", "pine", "caramel", "malt", "grapefruit", "banana", "clove",
                 "chocolate", "coffee", "honey", "bread", "grass", "vanilla", "lemon"),
    },
    "palate": {
        "body": ("medium", "full", "light", "heavy", "moderate"),
        "carb": ("crisp", "soft", "high", "low", "fizzy", "gentle"),
    },
    "taste": {
        "note": ("toffee", "biscuit", "orange", "hops", "toast", "cherry", "plum", "nuts",
                 "pepper", "apple"),
    },
}
_PHRASES = {
    "appearance": (
        "{s} {color} pour with a {head} head",
        "looks {s} , {color} in the glass with a {head} head",
        "the appearance is {s} : {color} with {head} foam",
    ),
    "aroma": (
        "the nose is {s} with notes of {note} and {note2}",
        "{s} aroma of {note} and {note2}",
        "smells {s} , {note} and {note2} come through",
    ),
    "palate": (
        "{s} mouthfeel , {body} body with {carb} carbonation",
        "feels {s} on the tongue , {body} body and {carb} carbonation",
        "the palate is {s} with a {body} body and {carb} carbonation",
    ),
    "taste": (
        "tastes {s} with flavors of {note} and {note2}",
        "the taste is {s} , {note} and {note2} up front",
        "{s} flavor of {note} and {note2}",
    ),
}
_PREFIX = ("", "", "", "honestly ,", "at first", "i think", "to me")
_FILLER = (
    "i had this one at a friend 's place last weekend .",
    "bought a six pack at the local store .",
    "served in a pint glass .",
    "poured from a bottle into a tulip .",
    "the bottle has a date printed on the label .",
    "i would like to try it again on tap some day .",
    "this is my second beer from this brewery .",
    "shared with my brother after dinner .",
    "it was a cold and rainy evening .",
    "the label shows a small boat on a lake .",
    "picked this up on a trip to the coast .",
    "drank it while watching the game .",
    "the price was about ten dollars .",
    "it came in a brown bottle with a cap .",
    "review from notes taken a while ago .",
    "thanks to the guy at the shop for the tip .",
)
_SHORTCUT = (
    "overall , a {s} beer .",
    "all in all {s} .",
    "my verdict : {s} .",
)


@dataclass(frozen=True)
class SyntheticConfig:
    """The synthetic multi-aspect review corpus (see :func:`synthetic_reviews`).

    Attributes:
        n_reviews: how many reviews.
        aspects: the rated aspects, a subset of appearance, aroma, palate, taste.
        correlation: Pearson correlation between any two aspects' ratings (0 .. 0.95),
            from a shared latent "overall quality" mixed with per-aspect noise.
        shortcut: probability that a review opens with an overall-verdict sentence whose
            sentiment follows the mean rating (not part of any aspect's gold rationale).
        max_len: upper bound on a review's tokens (filler sentences are dropped to fit).
        seed: the random seed (the corpus is a pure function of the config).
        generic: probability that an aspect's sentiment word comes from the generic bank
            ("good", "awful" ...) shared by all aspects, rather than the aspect's own bank.
        n_filler: inclusive range of neutral filler sentences per review.
        gold: ``"phrase"`` (the aspect's whole sentiment-bearing phrase, like the Beer
            annotations) or ``"word"`` (only its sentiment word).
        mention: probability that a review mentions an aspect at all (its sentence is
            present); an unmentioned aspect keeps its rating and has an empty gold
            rationale, as real reviews that skip an aspect. Below 1, another aspect's words
            are the only evidence for an unmentioned aspect, and they are worth selecting
            exactly when ratings correlate: the correlation shortcut behind interlocking.

    """

    n_reviews: int = 10_000
    aspects: tuple[str, ...] = ("appearance", "aroma", "palate")
    correlation: float = 0.0
    shortcut: float = 0.0
    max_len: int = 128
    seed: int = 0
    generic: float = 0.5
    n_filler: tuple[int, int] = (2, 5)
    gold: str = "phrase"
    mention: float = 1.0

    def validate(self) -> None:
        """Raise ``ValueError`` naming the problem if a field is out of range."""
        unknown = [a for a in self.aspects if a not in _PHRASES]
        if unknown or not self.aspects:
            raise ValueError(f"unknown synthetic aspect(s) {unknown or list(self.aspects)}; "
                             f"known aspects: {list(_PHRASES)}")
        if len(set(self.aspects)) != len(self.aspects):
            raise ValueError(f"duplicate aspects in {self.aspects}")
        if not 0.0 <= self.correlation <= 0.95:
            raise ValueError(f"correlation must lie in [0, 0.95], got {self.correlation}")
        for name in ("shortcut", "generic", "mention"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {v}")
        if self.n_reviews < 0:
            raise ValueError(f"n_reviews must be >= 0, got {self.n_reviews}")
        lo, hi = self.n_filler
        if not 0 <= lo <= hi:
            raise ValueError(f"n_filler must be (lo, hi) with 0 <= lo <= hi, got {self.n_filler}")
        if self.gold not in ("phrase", "word"):
            raise ValueError(f"gold must be 'phrase' or 'word', got {self.gold!r}")
        need = 12 * len(self.aspects) + 8
        if self.max_len < need:
            raise ValueError(f"max_len={self.max_len} is too short for {len(self.aspects)} "
                             f"aspect sentences (needs >= {need})")


def _quantise(u: np.ndarray) -> np.ndarray:
    return np.minimum(np.floor(u * LEVELS), LEVELS - 1) / (LEVELS - 1)


@functools.lru_cache(maxsize=64)
def _latent_correlation(rho: float) -> float:
    """The latent Gaussian correlation whose 5-level quantised ratings correlate at ``rho``.

    Ratings are ``Q(Phi(z))`` with ``z`` standard bivariate normal; their Pearson correlation
    is a monotone function of the latent one, computed exactly from the bivariate normal
    probabilities of the 5 x 5 cells and inverted by bisection.
    """
    if rho <= 0.0:
        return 0.0
    from scipy.stats import multivariate_normal, norm

    cuts = norm.ppf(np.arange(1, LEVELS) / LEVELS)
    edges = np.concatenate([[-np.inf], cuts, [np.inf]])
    vals = np.arange(LEVELS) / (LEVELS - 1)
    mean = vals.mean()
    var = ((vals - mean) ** 2).mean()

    def corr(r: float) -> float:
        mvn = multivariate_normal(mean=[0, 0], cov=[[1, r], [r, 1]])
        big = 8.0
        e = np.clip(edges, -big, big)
        cdf = np.array([[mvn.cdf([a, b]) for b in e] for a in e])
        p = cdf[1:, 1:] - cdf[:-1, 1:] - cdf[1:, :-1] + cdf[:-1, :-1]
        return float(((vals - mean)[:, None] * (vals - mean)[None, :] * p).sum() / var)

    lo, hi = rho, min(0.999, rho + 0.2)
    while corr(hi) < rho and hi < 0.999:
        hi = min(0.999, hi + 0.05)
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        if corr(mid) < rho:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def synthetic_ratings(n: int, k: int, correlation: float,
                      rng: np.random.Generator) -> np.ndarray:
    """``(n, k)`` ratings in ``{0, .25, .5, .75, 1}``, uniform, pairwise correlated at ``rho``.

    ``z_a = sqrt(r) g + sqrt(1 - r) e_a`` (shared latent quality ``g``, per-aspect noise
    ``e_a``), mapped to 5 equiprobable levels; ``r`` is chosen so that the quantised ratings'
    Pearson correlation equals ``correlation`` (:func:`_latent_correlation`).
    """
    from scipy.stats import norm

    r = _latent_correlation(float(correlation))
    g = rng.standard_normal((n, 1))
    e = rng.standard_normal((n, k))
    z = math.sqrt(r) * g + math.sqrt(1.0 - r) * e
    return _quantise(norm.cdf(z))


def synthetic_reviews(config: SyntheticConfig) -> ReviewSet:
    """A synthetic beer-review corpus with gold rationales, correlated ratings and a shortcut.

    Each review has one sentence per aspect (in random order) mixed with 2-5 neutral filler
    sentences. An aspect sentence holds a *phrase* with neutral descriptors that name the
    aspect ("hazy amber pour with a thick white head", "notes of citrus and pine", "medium
    body with crisp carbonation") and exactly one sentiment word whose level (0-4) is the
    aspect's rating; the gold rationale is that phrase (or only the word, ``gold="word"``).
    With probability ``shortcut`` the review opens with a verdict sentence ("overall , a good
    beer .") whose sentiment word follows the *mean* rating of the review.

    Why interlocking can appear: with correlated ratings, another aspect's sentiment word, and
    the verdict sentence, predict an aspect's rating nearly as well as its own words. A
    generator/predictor pair that starts on such tokens can settle there (a low loss, a wrong
    rationale), and the generic sentiment words make the confusion cheap.

    Args:
        config: the :class:`SyntheticConfig`.

    Returns:
        An annotated :class:`ReviewSet` (every review has gold spans for every aspect).

    """
    config.validate()
    rng = np.random.default_rng(config.seed)
    k = len(config.aspects)
    y = synthetic_ratings(config.n_reviews, k, config.correlation, rng)
    reviews = []
    for i in range(config.n_reviews):
        reviews.append(_synthetic_review(config, y[i], rng))
    return ReviewSet(config.aspects, reviews)


def _pick(rng: np.random.Generator, seq: Sequence[str]) -> str:
    return seq[int(rng.integers(len(seq)))]


def _aspect_sentence(aspect: str, level: int, cfg: SyntheticConfig,
                     rng: np.random.Generator) -> tuple[list[str], int, int, int]:
    """Tokens of one aspect sentence, the phrase span and the sentiment word's index."""
    bank = _GENERIC if rng.random() < cfg.generic else _SPECIFIC[aspect]
    word = _pick(rng, bank[level])
    slots = {"s": "\x00"}
    for name, options in _DESC[aspect].items():
        slots[name] = _pick(rng, options)
        if name == "note":
            others = [o for o in options if o != slots[name]]
            slots["note2"] = _pick(rng, others)
    phrase = _pick(rng, _PHRASES[aspect]).format(**slots).split()
    prefix = _pick(rng, _PREFIX).split()
    toks = [*prefix, *phrase, "."]
    start = len(prefix)
    s_idx = toks.index("\x00")
    toks[s_idx] = word
    return toks, start, start + len(phrase), s_idx


def _synthetic_review(cfg: SyntheticConfig, y: np.ndarray,
                      rng: np.random.Generator) -> Review:
    levels = np.rint(y * (LEVELS - 1)).astype(int)
    sentences: list[tuple[list[str], str | None, int, int]] = []
    for a, lv in zip(cfg.aspects, levels):
        if cfg.mention < 1.0 and rng.random() >= cfg.mention:
            continue
        toks, s, e, w = _aspect_sentence(a, int(lv), cfg, rng)
        span = (s, e) if cfg.gold == "phrase" else (w, w + 1)
        sentences.append((toks, a, *span))
    lo, hi = cfg.n_filler
    n_fill = int(rng.integers(lo, hi + 1))
    for j in rng.choice(len(_FILLER), size=min(n_fill, len(_FILLER)), replace=False):
        sentences.append((_FILLER[int(j)].split(), None, 0, 0))
    order = rng.permutation(len(sentences))
    sentences = [sentences[j] for j in order]
    if rng.random() < cfg.shortcut:
        mean_level = int(np.rint(float(np.mean(y)) * (LEVELS - 1)))
        verdict = _pick(rng, _SHORTCUT).format(s=_pick(rng, _GENERIC[mean_level])).split()
        sentences.insert(0, (verdict, None, 0, 0))
    # Fit max_len: drop filler sentences from the end until the review fits.
    while sum(len(s[0]) for s in sentences) > cfg.max_len:
        fill = [j for j, s in enumerate(sentences) if s[1] is None]
        if not fill:
            break
        del sentences[fill[-1]]
    tokens: list[str] = []
    rationales: dict[str, Spans] = {a: [] for a in cfg.aspects}
    for toks, a, s, e in sentences:
        if a is not None:
            rationales[a].append((len(tokens) + s, len(tokens) + e))
        tokens.extend(toks)
    return Review(tokens, y.astype(float), rationales)
