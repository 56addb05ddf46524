"""The demo section on the digits fallback (Fashion-MNIST absent): runs end to end."""

import warnings

from tamis.density.demo import demo_section


def test_demo_section_on_digits_fallback(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        section = demo_section(tmp_path / "out", data_dir=tmp_path / "no-fashion-mnist")
    assert section.error is None
    pngs = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert pngs and all(p.startswith("density_") for p in pngs)
    for name in pngs:
        assert name in section.body_html
    assert any("precision" in line for line in section.console)
    assert "digits" in section.body_html
