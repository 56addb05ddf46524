"""Per-aspect highlighted text: in the terminal (rich) and as a self-contained HTML fragment.

One colour per aspect, with a legend. A token selected for several aspects (possible with the
Bernoulli selector) takes the first aspect's colour and is underlined in the terminal / gets a
dashed outline in HTML. Everything user-provided (tokens, aspect names) is escaped.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np

__all__ = ["PALETTE", "render_html", "render_terminal"]

# (rich style background, HTML background) per aspect, cycled beyond six aspects.
PALETTE = (
    ("on dark_orange3", "#ffd08a"),
    ("on dodger_blue3", "#a9d1ff"),
    ("on green4", "#b6ecb0"),
    ("on magenta3", "#f2b5ef"),
    ("on gold3", "#fff29a"),
    ("on cyan4", "#a8ece8"),
)


def _check(tokens: Sequence[str], masks: np.ndarray, aspects: Sequence[str]) -> np.ndarray:
    m = np.asarray(masks, dtype=bool)
    if m.ndim != 2 or m.shape[0] != len(aspects):
        raise ValueError(f"masks must be (K={len(aspects)}, L), got shape {m.shape}")
    if m.shape[1] > len(tokens):
        raise ValueError(f"masks have {m.shape[1]} columns but the text has {len(tokens)} tokens")
    if m.shape[1] < len(tokens):  # a truncated text: the tail has no selection
        m = np.concatenate([m, np.zeros((m.shape[0], len(tokens) - m.shape[1]), bool)], axis=1)
    return m


def _labels(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First selecting aspect per token (-1 = none) and whether several aspects selected it."""
    any_ = m.any(axis=0)
    return np.where(any_, m.argmax(axis=0), -1), m.sum(axis=0) > 1


def render_terminal(tokens: Sequence[str], masks: np.ndarray, aspects: Sequence[str],
                    console: object | None = None) -> None:
    """Print ``tokens`` with each aspect's rationale highlighted, then a legend.

    Args:
        tokens: the review's tokens.
        masks: ``(K, L)`` boolean masks, ``L <= len(tokens)`` (a truncated text's tail is shown
            unhighlighted).
        aspects: the K aspect names (legend order = colour order).
        console: a ``rich.console.Console`` (default: a new one on stdout).

    Raises:
        ValueError: masks whose shape does not match ``aspects`` / ``tokens``.

    """
    from rich.console import Console
    from rich.text import Text

    m = _check(tokens, masks, aspects)
    con = console if console is not None else Console()
    label, multi = _labels(m)
    text = Text()
    for t, (tok, lab) in enumerate(zip(tokens, label)):
        if t:
            text.append(" ")
        if lab < 0:
            text.append(tok)
        else:
            style = PALETTE[lab % len(PALETTE)][0] + (" underline" if multi[t] else "")
            text.append(tok, style=style)
    legend = Text("legend: ")
    for k, a in enumerate(aspects):
        legend.append(f" {a} ", style=PALETTE[k % len(PALETTE)][0])
        legend.append(" ")
    con.print(text)  # type: ignore[attr-defined]
    con.print(legend)  # type: ignore[attr-defined]


def render_html(items: Sequence[tuple[Sequence[str], np.ndarray]] |
                Sequence[dict], aspects: Sequence[str]) -> str:
    """A self-contained HTML fragment: a legend, then one highlighted paragraph per review.

    Args:
        items: per review either ``(tokens, masks)`` or a dict with ``"tokens"``, ``"masks"``
            and optionally ``"caption"`` (e.g. predicted vs true ratings; escaped).
        aspects: the K aspect names.

    Returns:
        HTML (inline styles only, no scripts, no external resources); every token, caption
        and aspect name is HTML-escaped.

    Raises:
        ValueError: masks whose shape does not match ``aspects`` / ``tokens``.

    """
    colours = [PALETTE[k % len(PALETTE)][1] for k in range(len(aspects))]
    legend = " ".join(
        f'<span style="background:{c};padding:1px 6px;border-radius:3px">'
        f"{html.escape(str(a))}</span>" for a, c in zip(aspects, colours))
    parts = ['<div class="rationale">', f"<p><b>legend:</b> {legend}</p>"]
    for item in items:
        if isinstance(item, dict):
            tokens, masks, caption = item["tokens"], item["masks"], item.get("caption")
        else:
            tokens, masks = item
            caption = None
        m = _check(tokens, masks, aspects)
        label, multi = _labels(m)
        words = []
        for t, (tok, lab) in enumerate(zip(tokens, label)):
            esc = html.escape(str(tok))
            if lab < 0:
                words.append(esc)
                continue
            title = ", ".join(html.escape(str(aspects[k])) for k in np.flatnonzero(m[:, t]))
            outline = ";outline:1px dashed #333" if multi[t] else ""
            words.append(f'<span title="{title}" style="background:{colours[lab]};'
                         f'padding:0 2px;border-radius:2px{outline}">{esc}</span>')
        cap = f"<br><small>{html.escape(str(caption))}</small>" if caption else ""
        parts.append('<p style="line-height:1.8;font-family:Georgia,serif">'
                     + " ".join(words) + cap + "</p>")
    parts.append("</div>")
    return "\n".join(parts)
