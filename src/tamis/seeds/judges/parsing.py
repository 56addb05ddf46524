"""Strict parsing of a judge's free-text answers: a number or yes/no, else None (a failure)."""

from __future__ import annotations

import re

NUMBER_WORDS: dict[str, int] = {
    "zero": 0, "none": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20,
}
_TOKEN = re.compile(r"[a-z]+|\d+(?:[.,]\d+)?")


def parse_count(text: str) -> int | None:
    """The single count in ``text`` ("3", "There are three apples.", "none"), else None.

    Accepted: non-negative integer digits and number words zero..twenty ("none" = 0; a bare
    "no" = 0). An answer with no number, with two different numbers ("two or three"), or
    with a decimal/negative number is unparseable (None), never guessed.
    """
    if not isinstance(text, str):
        return None
    low = text.strip().lower()
    if re.fullmatch(r"no[.!]?", low):
        return 0
    if re.search(r"-\s*\d", low):
        return None
    values = set()
    for tok in _TOKEN.findall(low):
        if tok[0].isdigit():
            if not tok.isdigit():
                return None  # 2.5 or 1,000: not a count we accept
            values.add(int(tok))
        elif tok in NUMBER_WORDS:
            values.add(NUMBER_WORDS[tok])
    return values.pop() if len(values) == 1 else None


def parse_yes_no(text: str) -> bool | None:
    """True for yes, False for no ("Yes.", "no, it is not"), else None.

    Both a yes-word and a no-word in the answer ("yes and no") is unparseable.
    """
    if not isinstance(text, str):
        return None
    words = set(re.findall(r"[a-z]+", text.lower()))
    yes = bool(words & {"yes", "true", "correct"})
    no = bool(words & {"no", "false", "not", "incorrect"})
    if yes == no:
        return None
    return yes
