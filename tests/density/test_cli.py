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


# -- extractors, feature caches and user generators -------------------------------------------

import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402


class _Pool(nn.Module):
    """TorchScript-able extractor: per-channel mean and std plus a corner pixel (3 features)."""

    def __init__(self, mode: int = 0) -> None:
        super().__init__()
        self.mode = mode
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = x.flatten(1)
        out = torch.stack([f.mean(1), f.std(1), f[:, 0]], 1) * self.scale
        if self.mode == 1:
            return out[:, :, None]  # wrong shape (B, 3, 1)
        if self.mode == 2:
            return out.masked_fill(f[:, :1] > 0.5, float("nan"))  # some NaN rows
        return out


def _script(path, mode=0, scale=1.0):
    m = _Pool(mode)
    with torch.no_grad():
        m.scale.fill_(scale)
    torch.jit.save(torch.jit.script(m), path)
    return path


@pytest.fixture
def images_u8(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (40, 8, 8), dtype=np.uint8)
    np.save(tmp_path / "imgs.npy", arr)
    return tmp_path / "imgs.npy", arr


def test_embed_with_cache_and_uint8_rescale(tmp_path, images_u8):
    from tamis.density.extractors import extract_features, load_extractor

    path, arr = images_u8
    ex_path = _script(tmp_path / "f.pt")
    out = tmp_path / "f.npy"
    res = runner.invoke(app, ["embed", str(path), "--extractor", str(ex_path), "--out",
                              str(out), "--cache", str(tmp_path / "cache"), "--batch-size", "16"])
    assert res.exit_code == 0, res.output
    feats = np.load(out)
    ref = extract_features(load_extractor(ex_path), arr.astype(np.float32) / 255)
    np.testing.assert_allclose(feats, ref, rtol=1e-6, atol=1e-7)
    assert 0.3 < feats[:, 0].mean() < 0.7  # uint8 was rescaled to [0, 1]
    assert len(list((tmp_path / "cache").glob("feat-*.npy"))) == 1
    res = runner.invoke(app, ["embed", str(path), "--extractor", str(ex_path), "--out",
                              str(tmp_path / "g.npy"), "--cache", str(tmp_path / "cache")])
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(np.load(tmp_path / "g.npy"), feats)


def test_score_and_evaluate_embed_images(tmp_path, images_u8):
    path, arr = images_u8
    ex_path = _script(tmp_path / "f.pt")
    np.save(tmp_path / "fake.npy", arr[:20].astype(np.float32) / 255 * 0.5)
    res = runner.invoke(app, ["score", str(path), "--extractor", str(ex_path), "--k", "5",
                              "--out", str(tmp_path / "d.npy"), "--cache", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    d = np.load(tmp_path / "d.npy")
    assert d.shape == (40,) and abs(d.mean() - 1) < 1e-5
    res = runner.invoke(app, ["score", str(path), "--extractor", str(ex_path), "--k", "5",
                              "--queries", str(tmp_path / "fake.npy"), "--out",
                              str(tmp_path / "q.npy")])
    assert res.exit_code == 0, res.output
    assert np.load(tmp_path / "q.npy").shape == (20,)
    res = runner.invoke(app, ["evaluate", str(path), str(path), "--extractor", str(ex_path),
                              "--k", "3", "--out", str(tmp_path / "m.json")])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["precision"] == 1.0 and m["recall"] == 1.0 and abs(m["frechet_distance"]) < 1e-3


def test_extractor_and_cache_errors_are_one_line(tmp_path, images_u8):
    path, _ = images_u8
    embed = ["embed", str(path), "--out", str(tmp_path / "o.npy"), "--extractor"]
    _one_line_error(runner.invoke(app, embed + [str(_script(tmp_path / "bad.pt", mode=1))]),
                    "bad.pt", "returned shape (40, 3, 1)", "2-D")
    _one_line_error(runner.invoke(app, embed + [str(_script(tmp_path / "nan.pt", mode=2))]),
                    "nan.pt", "NaN or infinite features in", "row(s)")
    (tmp_path / "notes.txt").write_text("hi")
    _one_line_error(runner.invoke(app, embed + [str(tmp_path / "notes.txt")]),
                    "notes.txt is not an extractor")
    _one_line_error(runner.invoke(app, embed + [str(tmp_path / "nothing.pt")]),
                    "nothing.pt does not exist")
    np.save(tmp_path / "big.npy", np.full((4, 8, 8), 3.0))
    _one_line_error(runner.invoke(app, ["embed", str(tmp_path / "big.npy"), "--extractor",
                                        str(_script(tmp_path / "f.pt"))]), "floats must be in")
    # a cache entry of extractor A under B's key, and a truncated entry
    a, b = _script(tmp_path / "a.pt", scale=1.0), _script(tmp_path / "b.pt", scale=2.0)
    cache = tmp_path / "cache"
    args = ["embed", str(path), "--out", str(tmp_path / "o.npy"), "--cache", str(cache),
            "--extractor"]
    assert runner.invoke(app, args + [str(a)]).exit_code == 0
    (a_npy,) = cache.glob("feat-*.npy")
    a_npy.rename(tmp_path / "a_entry.npy")
    a_npy.with_suffix(".json").rename(tmp_path / "a_entry.json")
    assert runner.invoke(app, args + [str(b)]).exit_code == 0
    (b_npy,) = cache.glob("feat-*.npy")
    (tmp_path / "a_entry.npy").replace(b_npy)
    (tmp_path / "a_entry.json").replace(b_npy.with_suffix(".json"))
    _one_line_error(runner.invoke(app, args + [str(b)]), "was written by extractor")
    assert runner.invoke(app, args + [str(a)]).exit_code == 0  # a's own entry again
    (a_npy,) = set(cache.glob("feat-*.npy")) - {b_npy}
    a_npy.write_bytes(a_npy.read_bytes()[:100])
    _one_line_error(runner.invoke(app, args + [str(a)]), a_npy.name, "corrupted or truncated")


def _tiny_pipeline(path):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
        block_out_channels=(8, 16), norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))
    sched = diffusers.DDPMScheduler(num_train_timesteps=50, beta_schedule="squaredcos_cap_v2")
    diffusers.DDPMPipeline(unet=unet, scheduler=sched).save_pretrained(path)
    return path


def test_sample_and_finetune_a_diffusers_generator(tmp_path, images_u8):
    from tamis.density.config import ExtractorConfig
    from tamis.density.models import FeatureCNN, save_checkpoint

    path, _ = images_u8
    pipe = _tiny_pipeline(tmp_path / "pipe")
    torch.manual_seed(0)
    cfg = {"image_size": 8, "widths": [4, 8], "feature_dim": 6, "num_classes": 2}
    save_checkpoint(FeatureCNN(ExtractorConfig(**{**cfg, "widths": (4, 8)})),
                    tmp_path / "e.safetensors", "extractor", cfg)
    common = ["--generator", str(pipe), "--extractor", str(tmp_path / "e.safetensors"),
              "--reference", str(path), "--k", "5", "--num-inference-steps", "2"]
    for mode, n in (("importance", 6), ("perturb", 3)):
        out = tmp_path / f"{mode}.npz"
        res = runner.invoke(app, ["sample", "--mode", mode, "-n", str(n), "--w", "2",
                                  "--epsilon", "0.1", "--out", str(out), *common])
        assert res.exit_code == 0, res.output
        data = np.load(out)
        assert data["images"].shape == (n, 1, 8, 8) and data["latents"].shape == (n, 1, 8, 8)
        assert data["images"].min() >= 0 and data["images"].max() <= 1
    _one_line_error(runner.invoke(app, ["sample", "--mode", "truncation", "-n", "2", *common]),
                    "truncation is for GAN latents")
    out_dir = tmp_path / "tuned"
    res = runner.invoke(app, ["finetune", "--steps", "2", "--batch-size", "8", "--lr", "1e-2",
                              "--out", str(out_dir), *common])
    assert res.exit_code == 0, res.output
    assert (out_dir / "model_index.json").is_file()
    from tamis.density.adapters import load_generator

    before, after = load_generator(pipe), load_generator(out_dir)
    with torch.no_grad():
        diff = sum(float((p - q).abs().sum()) for p, q in
                   zip(before.parameters(), after.parameters(), strict=True))
    assert diff > 0  # the weights moved


def test_generator_errors_are_one_line(tmp_path, images_u8):
    path, _ = images_u8
    ex = str(_script(tmp_path / "f.pt"))
    (tmp_path / "notpipe").mkdir()
    (tmp_path / "notpipe" / "config.json").write_text("{}")
    base = ["sample", "-n", "2", "--extractor", ex, "--reference", str(path)]
    pytest.importorskip("diffusers")
    _one_line_error(runner.invoke(app, [*base, "--generator", str(tmp_path / "notpipe")]),
                    "not a diffusers pipeline directory", "model_index.json")
    _one_line_error(runner.invoke(app, [*base, "--generator", str(tmp_path / "nope")]),
                    "nope does not exist")
    _one_line_error(runner.invoke(app, ["sample", "--generator", str(tmp_path / "notpipe")]),
                    "--generator needs --extractor")
    _one_line_error(runner.invoke(app, ["sample", "--extractor", ex]),
                    "steer a --generator")
