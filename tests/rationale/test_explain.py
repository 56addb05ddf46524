"""Terminal and HTML rendering of per-aspect rationales."""

from __future__ import annotations

import io

import numpy as np
import pytest
from rich.console import Console

from tamis.rationale.explain import PALETTE, render_html, render_terminal

TOKENS = ["a", "<b>hazy</b>", "pour", "&", "pine"]
MASKS = np.array([[0, 1, 1, 0, 0], [0, 0, 0, 0, 1]], bool)
ASPECTS = ("appearance", "<aroma>")


def test_html_escapes_and_colours():
    out = render_html([(TOKENS, MASKS)], ASPECTS)
    assert "<b>hazy</b>" not in out and "&lt;b&gt;hazy&lt;/b&gt;" in out
    assert "&lt;aroma&gt;" in out and "<aroma>" not in out
    assert " &amp; " in out
    assert "<script" not in out and "http" not in out  # self-contained
    assert out.count(PALETTE[0][1]) == 1 + 2  # legend + two appearance tokens
    assert out.count(PALETTE[1][1]) == 1 + 1


def test_html_dict_items_caption_overlap_and_truncation():
    masks = np.array([[1, 1, 0], [1, 0, 0]], bool)  # 3 columns for 5 tokens (truncated)
    out = render_html([{"tokens": TOKENS, "masks": masks, "caption": "y=<0.8>"}], ASPECTS)
    assert "y=&lt;0.8&gt;" in out
    assert "outline:1px dashed" in out  # token 0 selected by both aspects
    assert 'title="appearance, &lt;aroma&gt;"' in out
    assert out.rstrip().endswith("</div>")


def test_terminal_output():
    buf = io.StringIO()
    con = Console(file=buf, force_terminal=True, color_system="truecolor", width=120)
    render_terminal(TOKENS, MASKS, ASPECTS, console=con)
    text = buf.getvalue()
    assert "legend:" in text and "appearance" in text and "<aroma>" in text
    assert "\x1b[" in text  # styled
    plain = io.StringIO()
    render_terminal(TOKENS, MASKS, ASPECTS, console=Console(file=plain, width=120))
    assert plain.getvalue().splitlines()[0] == " ".join(TOKENS)


@pytest.mark.parametrize("masks, msg", [
    (np.zeros((3, 5), bool), r"K=2"),
    (np.zeros((2, 7), bool), "7 columns but the text has 5"),
    (np.zeros(5, bool), "K=2"),
])
def test_bad_masks(masks, msg):
    with pytest.raises(ValueError, match=msg):
        render_html([(TOKENS, masks)], ASPECTS)
    with pytest.raises(ValueError, match=msg):
        render_terminal(TOKENS, masks, ASPECTS, console=Console(file=io.StringIO()))
