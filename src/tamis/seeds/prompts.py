"""Prompt builders for numerical and spatial composition (pure, no torch).

Numerical prompts follow the paper's ``"{count word} {plural}, {background}"`` (counts two to
six by default), spatial prompts ``"a {obj} {relation phrase} a {obj2}"`` with four relations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

RELATIONS: tuple[str, ...] = ("left of", "right of", "on top of", "under")
RELATION_PHRASES: dict[str, str] = {
    "left of": "on the left of",
    "right of": "on the right of",
    "on top of": "on top of",
    "under": "under",
}
#: The relation that holds when the two objects are swapped.
INVERSE_RELATIONS: dict[str, str] = {
    "left of": "right of",
    "right of": "left of",
    "on top of": "under",
    "under": "on top of",
}
COUNT_WORDS: dict[int, str] = {
    1: "one", 2: "two", 3: "three", 4: "four", 5: "five",
    6: "six", 7: "seven", 8: "eight", 9: "nine", 10: "ten",
}
DEFAULT_COUNTS: tuple[int, ...] = (2, 3, 4, 5, 6)
SPLITS: tuple[str, ...] = ("train", "eval")


@dataclass(frozen=True)
class ObjectName:
    """An object category as it appears in prompts.

    Attributes:
        singular: singular form ("apple", "red circle").
        plural: plural form ("apples").
        article: indefinite article, "a" or "an".

    """

    singular: str
    plural: str
    article: str = "a"

    def __post_init__(self) -> None:
        """Validate the names and the article."""
        if not self.singular.strip() or not self.plural.strip():
            raise ValueError(f"object names must be non-empty, got {self!r}")
        if self.article not in ("a", "an"):
            raise ValueError(f"article must be 'a' or 'an', got {self.article!r}")

    @classmethod
    def parse(cls, line: str) -> ObjectName:
        """Parse a Comp90-style line ``"apple, an apple, apples"``.

        Raises:
            ValueError: the line does not have three comma-separated fields, or the middle
                field is not ``"a/an <singular>"``.

        """
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 3 or not all(parts):
            raise ValueError(
                f"object line must be 'singular, a/an singular, plural', got {line!r}"
            )
        singular, with_article, plural = parts
        article, _, rest = with_article.partition(" ")
        article = article.lower()
        if article not in ("a", "an") or rest.strip() != singular:
            raise ValueError(
                f"middle field must be 'a {singular}' or 'an {singular}', got {with_article!r}"
            )
        return cls(singular=singular, plural=plural, article=article)

    def to_line(self) -> str:
        """The Comp90-style line of this object."""
        return f"{self.singular}, {self.article} {self.singular}, {self.plural}"


def read_objects(path: str) -> list[ObjectName]:
    """Read a Comp90-style object file (one ``singular, a/an singular, plural`` per line).

    Blank lines and lines starting with ``#`` are skipped.

    Raises:
        ValueError: a malformed line (file and line number in the message), or no objects.

    """
    objects = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                objects.append(ObjectName.parse(line))
            except ValueError as err:
                raise ValueError(f"{path}:{number}: {err}") from None
    if not objects:
        raise ValueError(f"{path}: no objects in file")
    return objects


@dataclass(frozen=True)
class Question:
    """What a judge must check about one image.

    Attributes:
        kind: ``"count"`` or ``"spatial"``.
        obj: the (first) object.
        count: expected count (kind "count").
        relation: one of :data:`RELATIONS` (kind "spatial"): ``obj <relation> obj2``.
        obj2: the second object (kind "spatial").

    """

    kind: str
    obj: ObjectName
    count: int | None = None
    relation: str | None = None
    obj2: ObjectName | None = None

    def __post_init__(self) -> None:
        """Check that the fields match the kind."""
        if self.kind == "count":
            _check_count(self.count)
        elif self.kind == "spatial":
            _check_relation(self.relation)
            if self.obj2 is None:
                raise ValueError("a spatial question needs obj2")
        else:
            raise ValueError(f"unknown question kind {self.kind!r} (use 'count' or 'spatial')")

    @property
    def category(self) -> str:
        """The reliability category: ``"count=3"`` or ``"relation=left of"``."""
        if self.kind == "count":
            return f"count={self.count}"
        return f"relation={self.relation}"

    def to_dict(self) -> dict:
        """Plain-dict form (for JSONL records)."""
        out: dict = {"kind": self.kind, "obj": _obj_dict(self.obj)}
        if self.kind == "count":
            out["count"] = self.count
        else:
            out["relation"] = self.relation
            out["obj2"] = _obj_dict(self.obj2)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> Question:
        """Inverse of :meth:`to_dict`."""
        obj2 = data.get("obj2")
        return cls(
            kind=data["kind"],
            obj=ObjectName(**data["obj"]),
            count=data.get("count"),
            relation=data.get("relation"),
            obj2=ObjectName(**obj2) if obj2 else None,
        )


def _obj_dict(obj: ObjectName | None) -> dict | None:
    if obj is None:
        return None
    return {"singular": obj.singular, "plural": obj.plural, "article": obj.article}


@dataclass(frozen=True)
class Prompt:
    """A prompt with the question that checks it.

    Attributes:
        text: the prompt text given to the generator.
        question: what the judge checks.
        category: reliability category ("count=3" / "relation=left of").
        split: "train" or "eval".
        background: the background phrase, if any.

    """

    text: str
    question: Question
    category: str
    split: str
    background: str | None = None

    def to_dict(self) -> dict:
        """Plain-dict form (for JSONL records)."""
        return {
            "text": self.text,
            "question": self.question.to_dict(),
            "category": self.category,
            "split": self.split,
            "background": self.background,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Prompt:
        """Inverse of :meth:`to_dict`."""
        return cls(
            text=data["text"],
            question=Question.from_dict(data["question"]),
            category=data["category"],
            split=data["split"],
            background=data.get("background"),
        )


def _check_count(count: int | None) -> None:
    if not isinstance(count, int) or isinstance(count, bool) or count not in COUNT_WORDS:
        raise ValueError(
            f"count {count!r} outside the supported range {min(COUNT_WORDS)}..{max(COUNT_WORDS)}"
        )


def _check_relation(relation: str | None) -> None:
    if relation not in RELATIONS:
        raise ValueError(f"unknown relation {relation!r} (known: {', '.join(RELATIONS)})")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (use 'train' or 'eval')")


def _drop_background(template: str) -> str:
    for part in (", {background}", " {background}", "{background}"):
        template = template.replace(part, "")
    return template


def numerical_prompts(
    objects: Sequence[ObjectName],
    backgrounds: Sequence[str | None],
    counts: Sequence[int] = DEFAULT_COUNTS,
    split: str = "train",
    template: str = "{count_word} {plural}, {background}",
) -> list[Prompt]:
    """Numerical-composition prompts: every count x object x background.

    Order: count-major, then object, then background (deterministic). A background that is
    None or empty drops the template's ``", {background}"`` part.

    Raises:
        ValueError: empty objects/backgrounds/counts, a count outside 1..10, an unknown split.

    """
    _check_split(split)
    if not objects:
        raise ValueError("numerical_prompts needs at least one object (got an empty list)")
    if not backgrounds:
        raise ValueError("numerical_prompts needs at least one background (use [None] for none)")
    if not counts:
        raise ValueError("numerical_prompts needs at least one count")
    for count in counts:
        _check_count(count)
    out = []
    for count in counts:
        for obj in objects:
            for background in backgrounds:
                tmpl = template if background else _drop_background(template)
                text = tmpl.format(
                    count_word=COUNT_WORDS[count], count=count, plural=obj.plural,
                    singular=obj.singular, article=obj.article, background=background or "",
                )
                question = Question(kind="count", obj=obj, count=count)
                out.append(Prompt(text, question, question.category, split, background or None))
    return out


def spatial_prompts(
    pairs: Sequence[tuple[ObjectName, ObjectName]],
    relations: Sequence[str] = RELATIONS,
    split: str = "train",
    template: str = "{article} {obj} {relation_phrase} {article2} {obj2}",
) -> list[Prompt]:
    """Spatial-composition prompts: every relation x pair (relation-major order).

    Raises:
        ValueError: empty pairs/relations, an unknown relation, a pair of identical objects,
            an unknown split.

    """
    _check_split(split)
    if not pairs:
        raise ValueError("spatial_prompts needs at least one object pair (got an empty list)")
    if not relations:
        raise ValueError("spatial_prompts needs at least one relation")
    for relation in relations:
        _check_relation(relation)
    out = []
    for relation in relations:
        for obj, obj2 in pairs:
            if obj == obj2:
                raise ValueError(f"a spatial pair needs two different objects, got {obj!r} twice")
            text = template.format(
                article=obj.article, obj=obj.singular, relation_phrase=RELATION_PHRASES[relation],
                article2=obj2.article, obj2=obj2.singular, relation=relation,
            )
            question = Question(kind="spatial", obj=obj, relation=relation, obj2=obj2)
            out.append(Prompt(text, question, question.category, split))
    return out
