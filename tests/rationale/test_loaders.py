"""Beer (Lei et al.) and Hotel (R2A) loaders on small hand-made fixtures."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from tamis.rationale.data import load_beer, load_hotel

FIX = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("name", ["beer_ratings.txt", "beer_ratings.txt.gz"])
def test_beer_text_format(name):
    rs = load_beer(FIX / name)
    assert rs.aspects == ("appearance", "aroma", "palate") and len(rs) == 2
    assert rs.reviews[0].tokens[:5] == ["this", "beer", "pours", "a", "hazy"]
    np.testing.assert_allclose(rs.ratings(), [[0.8, 0.6, 0.7], [0.2, 0.4, 0.3]])
    assert rs.gold_masks(0) is None


def test_beer_handles_and_aspect_selection():
    raw = (FIX / "beer_ratings.txt.gz").read_bytes()
    rs = load_beer(io.BytesIO(raw), aspects=("overall", "taste"))
    np.testing.assert_allclose(rs.ratings(), [[1.0, 0.9], [0.4, 0.5]])
    rs = load_beer(io.StringIO((FIX / "beer_ratings.txt").read_text()), aspects="aroma")
    assert rs.aspects == ("aroma",)


def test_beer_annotations():
    rs = load_beer(FIX / "beer_annotations.json")
    assert len(rs) == 2
    g = rs.gold_masks(0)
    assert g.shape == (3, 12)
    assert np.flatnonzero(g[0]).tolist() == [0, 1, 2, 3]
    assert np.flatnonzero(g[1]).tolist() == [5, 6, 7]
    assert np.flatnonzero(g[2]).tolist() == [9, 10]
    g1 = rs.gold_masks(1)
    assert g1[1].sum() == 0 and g1[2].sum() == 0  # empty list / missing key = no gold
    np.testing.assert_allclose(rs.ratings()[1], [0.1, 0.2, 0.3])
    rs = load_beer(FIX / "beer_annotations.json", aspects=("overall",))
    assert np.flatnonzero(rs.gold_masks(1)[0]).tolist() == [4, 5]


def test_beer_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"unknown aspect\(s\) \['colour'\]; known aspects: "
                                         r"\['appearance'"):
        load_beer(FIX / "beer_ratings.txt", aspects=("colour",))
    p = tmp_path / "b.txt"
    p.write_text("0.1 0.2 0.3\tshort scores\n")
    with pytest.raises(ValueError, match=r"b.txt:1: expected 5 scores, found 3"):
        load_beer(p)
    p.write_text("0.1 0.2 0.3 0.4 0.5 no tab here\n")
    with pytest.raises(ValueError, match="no tab"):
        load_beer(p)
    p.write_text("0.1 0.2 0.3 0.4 7\ttoo high\n")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        load_beer(p)
    p.write_text("0.1 0.2 0.3 0.4 0.5\t   \n")
    with pytest.raises(ValueError, match="empty text"):
        load_beer(p)
    p.write_text('{"x": ["a"], "y": [0.1, 0.2, 0.3, 0.4, 0.5], "0": [[0, 1]]}\n{"x": ["b"')
    with pytest.raises(ValueError, match=r"b.txt:2: not valid JSON"):
        load_beer(p)
    p.write_text('{"x": ["a"], "y": [0.1, 0.2, 0.3, 0.4, 0.5], "0": [[0, 4]]}\n')
    with pytest.raises(ValueError, match="outside the 1 tokens"):
        load_beer(p)


def test_hotel_with_header_and_rationale():
    rs = load_hotel(FIX / "hotel_Location.train", "Location")
    assert rs.aspects == ("location",) and len(rs) == 3
    assert rs.ratings()[:, 0].tolist() == [1.0, 0.0, 1.0]
    assert np.flatnonzero(rs.gold_masks(0)[0]).tolist() == [3, 4, 5, 6]
    assert rs.gold_masks(1)[0].all()
    assert rs.gold_masks(2) is None


def test_hotel_headerless():
    rs = load_hotel(FIX / "hotel_Service.dev", "service")
    assert [r.tokens for r in rs.reviews] == [["the", "staff", "was", "rude"], ["great", "service"]]
    assert rs.gold_masks(0) is None


def test_hotel_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"unknown aspect.*'rooms'.*'location', 'service'"):
        load_hotel(FIX / "hotel_Service.dev", "rooms")
    p = tmp_path / "h.train"
    p.write_text("1\tgood place\t1 0 1\n")
    with pytest.raises(ValueError, match=r"h.train:1: rationale must be one 0/1 per token"):
        load_hotel(p, "location")
    p.write_text("3\tgood place\n")
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        load_hotel(p, "location")
    p.write_text("pos\tgood place\n")
    with pytest.raises(ValueError, match="not a number"):
        load_hotel(p, "location")
    p.write_text("1\t \n")
    with pytest.raises(ValueError, match="empty text"):
        load_hotel(p, "location")
    p.write_text("justonecolumn\n")
    with pytest.raises(ValueError, match="label and text"):
        load_hotel(p, "location")


def test_truncated_gzip_and_binary(tmp_path):
    raw = (FIX / "beer_ratings.txt.gz").read_bytes()
    p = tmp_path / "cut.txt.gz"
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"cut.txt.gz: truncated or corrupt gzip"):
        load_beer(p)
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match="not UTF-8"):
        load_hotel(p, "service")
