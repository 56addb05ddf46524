import json

import numpy as np
from typer.testing import CliRunner

from tamis.density.cli import app

runner = CliRunner()


def test_score_and_evaluate(tmp_path, rng):
    ref, fake = rng.normal(size=(300, 4)), rng.normal(size=(200, 4)) * 0.7
    np.save(tmp_path / "ref.npy", ref)
    np.save(tmp_path / "fake.npy", fake)
    res = runner.invoke(app, ["score", str(tmp_path / "ref.npy"), "--out",
                              str(tmp_path / "d.npy"), "--k", "10", "--predictor-out",
                              str(tmp_path / "p.safetensors"), "--epochs", "3"])
    assert res.exit_code == 0, res.output
    d = np.load(tmp_path / "d.npy")
    assert d.shape == (300,) and abs(d.mean() - 1) < 1e-6
    assert (tmp_path / "p.safetensors").exists()
    res = runner.invoke(app, ["score", str(tmp_path / "ref.npy"), "--queries",
                              str(tmp_path / "fake.npy"), "--out", str(tmp_path / "q.npy")])
    assert res.exit_code == 0, res.output
    assert np.load(tmp_path / "q.npy").shape == (200,)
    res = runner.invoke(app, ["evaluate", str(tmp_path / "ref.npy"), str(tmp_path / "fake.npy"),
                              "--out", str(tmp_path / "m.json")])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "m.json").read_text())
    assert set(m) == {"precision", "recall", "density", "coverage", "frechet_distance"}
    assert m["precision"] > m["recall"]


def _one_line_error(res, *needles: str) -> None:
    assert res.exit_code == 2, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    assert "Traceback" not in res.output
    lines = [ln for ln in res.output.splitlines() if "error:" in ln]
    assert len(lines) == 1, res.output
    text = lines[0][lines[0].index("error:"):]
    for n in needles:
        assert n in text, text


def test_bad_input_is_one_line(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((5, 3)))
    _one_line_error(runner.invoke(app, ["score", str(tmp_path / "a.npy"), "--k", "10"]),
                    "too large")
    _one_line_error(runner.invoke(app, ["evaluate", str(tmp_path / "missing.npy"),
                                        str(tmp_path / "a.npy")]), "missing.npy", "not exist")
    (tmp_path / "garbage.npy").write_bytes(b"this is not numpy at all")
    _one_line_error(runner.invoke(app, ["score", str(tmp_path / "garbage.npy")]),
                    "garbage.npy", "not a .npy")
    good = tmp_path / "good.npy"
    np.save(good, np.ones((50, 4)))
    (tmp_path / "cut.npy").write_bytes(good.read_bytes()[:200])
    _one_line_error(runner.invoke(app, ["score", str(tmp_path / "cut.npy")]), "truncated")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}] * 3, dtype=object), allow_pickle=True)
    _one_line_error(runner.invoke(app, ["score", str(tmp_path / "obj.npy")]), "obj.npy",
                    "Python objects")
    np.save(tmp_path / "v.npy", np.ones(30))
    _one_line_error(runner.invoke(app, ["score", str(tmp_path / "v.npy")]), "(N, D)")
    nan = np.random.default_rng(0).normal(size=(40, 3))
    nan[3, 1] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    _one_line_error(runner.invoke(app, ["score", str(tmp_path / "nan.npy"), "--k", "5"]))
    _one_line_error(runner.invoke(app, ["score", str(tmp_path)]), "directory")


def _needs_bundled_models():
    import pytest

    from tamis.data import FASHION_MNIST_DIR
    from tamis.density.pipeline import CHECKPOINTS

    if not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST is not installed")
    if not (CHECKPOINTS / "gan_generator.safetensors").exists():
        pytest.skip("no bundled checkpoints")


def test_sample_and_finetune_with_bundled_models(tmp_path):
    _needs_bundled_models()
    for mode in ("importance", "perturb", "drs"):
        out = tmp_path / f"{mode}.npz"
        res = runner.invoke(app, ["sample", "--mode", mode, "-n", "40", "--n-ref", "600",
                                  "--w", "5", "--out", str(out)])
        assert res.exit_code == 0, res.output
        data = np.load(out)
        assert data["images"].shape == (40, 1, 28, 28) and data["latents"].shape[0] == 40
    res = runner.invoke(app, ["finetune", "--steps", "3", "--n-ref", "600", "--out",
                              str(tmp_path / "g.safetensors")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "g.safetensors").exists()
