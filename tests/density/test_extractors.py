"""Extractors: transformers backbones, TorchScript, the FID Inception convention, FeatureCNN."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from tamis.density.config import ExtractorConfig, GANConfig
from tamis.density.extractors import (
    CallableExtractor,
    FeatureExtractor,
    InceptionFIDExtractor,
    TamisCNNExtractor,
    TorchScriptExtractor,
    as_images,
    check_features,
    extract_features,
    load_extractor,
)
from tamis.density.models import FeatureCNN, Generator, load_checkpoint, save_checkpoint

VIT = dict(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2,
           num_attention_heads=2, intermediate_size=64)


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory):
    tr = pytest.importorskip("transformers")
    path = tmp_path_factory.mktemp("vit")
    torch.manual_seed(0)
    tr.ViTModel(tr.ViTConfig(**VIT)).save_pretrained(path)
    tr.ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(path)
    return path


def _direction_check(fn, x, seed=0):
    """Autograd directional derivative against a central finite difference (float64)."""
    g = torch.Generator().manual_seed(seed)
    proj = torch.randn(fn(x).shape[1], generator=g, dtype=x.dtype)
    v = torch.randn(x.shape, generator=g, dtype=x.dtype)
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad((fn(x) @ proj).sum(), x)
    h = 1e-5
    with torch.no_grad():
        fd = ((fn(x + h * v) @ proj).sum() - (fn(x - h * v) @ proj).sum()) / (2 * h)
    return float((grad * v).sum()), float(fd)


def test_vit_features_equal_direct_forward_and_gradients_reach_input(vit_dir):
    import transformers as tr

    ex = load_extractor(vit_dir)
    assert isinstance(ex, FeatureExtractor)
    assert ex.pooling == "cls" and ex.dim == 32
    x = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    feats = ex(x)
    assert feats.shape == (3, 32) and feats.dtype == torch.float32
    pixels = ex.preprocess(x)
    assert pixels.shape == (3, 3, 16, 16)
    # grey -> 3 channels, then (x - 0.5) / 0.5 (the processor's mean/std)
    torch.testing.assert_close(pixels, (x.expand(-1, 3, -1, -1) - 0.5) / 0.5)
    direct = tr.ViTModel.from_pretrained(vit_dir).eval()
    with torch.no_grad():
        ref = direct(pixel_values=pixels).last_hidden_state[:, 0]
    torch.testing.assert_close(feats.detach(), ref, atol=1e-6, rtol=1e-5)
    # mean and pooler poolings of the same model
    mean = tr.ViTModel.from_pretrained(vit_dir).eval()
    with torch.no_grad():
        out = mean(pixel_values=pixels)
    from tamis.density.extractors import HFVisionExtractor

    torch.testing.assert_close(HFVisionExtractor.from_pretrained(vit_dir, "mean")(x),
                               out.last_hidden_state[:, 1:].mean(1), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(HFVisionExtractor.from_pretrained(vit_dir, "pooler")(x),
                               out.pooler_output, atol=1e-6, rtol=1e-5)
    # gradients reach the input and agree with a finite difference (float64 copy)
    xg = x.clone().requires_grad_(True)
    (ex(xg) @ torch.randn(32)).sum().backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all() and xg.grad.abs().sum() > 0
    ex64 = HFVisionExtractor.from_pretrained(vit_dir, dtype=torch.float64)
    auto, fd = _direction_check(lambda t: ex64.features_from_pixels(ex64.preprocess(t)),
                                x.double())
    assert auto == pytest.approx(fd, rel=1e-5, abs=1e-9)


def test_vit_preprocessing_matches_the_image_processor(vit_dir):
    import transformers as tr

    ex = load_extractor(vit_dir)
    proc = tr.AutoImageProcessor.from_pretrained(vit_dir)
    rng = np.random.default_rng(0)
    # at the model's size: no resize, identical up to float rounding
    img = rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    theirs = proc(images=list(img), return_tensors="pt").pixel_values
    ours = ex.preprocess(torch.from_numpy(img).permute(0, 3, 1, 2).float() / 255)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)
    # resized 32 -> 16 and 8 -> 16: PIL resizes uint8 pixels and rounds them, torch does not,
    # so they differ by at most one grey level: 1/255 / std(0.5) = 0.0078 after normalising
    for side in (32, 8):
        img = rng.integers(0, 256, (2, side, side, 3), dtype=np.uint8)
        theirs = proc(images=list(img), return_tensors="pt").pixel_values
        ours = ex.preprocess(torch.from_numpy(img).permute(0, 3, 1, 2).float() / 255)
        assert ours.shape == theirs.shape == (2, 3, 16, 16)
        err = (ours - theirs).abs().max().item()
        assert err <= 1.01 / 255 / 0.5, err


def test_fingerprint_follows_weights_and_preprocessing(vit_dir, tmp_path):
    import transformers as tr

    from tamis.density.extractors import HFVisionExtractor

    a, b = load_extractor(vit_dir), load_extractor(vit_dir)
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 16
    assert HFVisionExtractor.from_pretrained(vit_dir, "mean").fingerprint != a.fingerprint
    torch.manual_seed(5)
    tr.ViTModel(tr.ViTConfig(**VIT)).save_pretrained(tmp_path)
    tr.ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(tmp_path)
    assert load_extractor(tmp_path).fingerprint != a.fingerprint
    with pytest.raises(ValueError, match="pooling must be"):
        HFVisionExtractor.from_pretrained(vit_dir, "max")


def test_vit_without_processor_uses_image_size_and_imagenet_stats(tmp_path):
    tr = pytest.importorskip("transformers")
    torch.manual_seed(0)
    tr.ViTModel(tr.ViTConfig(**VIT)).save_pretrained(tmp_path)
    ex = load_extractor(tmp_path)
    x = torch.full((2, 3, 24, 24), 0.5)
    px = ex.preprocess(x)
    assert px.shape == (2, 3, 16, 16)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(px[:, :, 0, 0], ((0.5 - mean) / std).expand(2, 3))


def test_clip_uses_projected_image_features(tmp_path):
    tr = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = tr.CLIPConfig(
        text_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, vocab_size=100, max_position_embeddings=16,
                         bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=VIT, projection_dim=8)
    model = tr.CLIPModel(cfg).eval()
    model.save_pretrained(tmp_path / "clip")
    tr.CLIPImageProcessor(size={"shortest_edge": 16},
                          crop_size={"height": 16, "width": 16}).save_pretrained(tmp_path / "clip")
    ex = load_extractor(tmp_path / "clip")
    assert ex.pooling == "projection" and ex.dim == 8
    x = torch.rand(2, 1, 20, 24, generator=torch.Generator().manual_seed(0))
    px = ex.preprocess(x)
    assert px.shape == (2, 3, 16, 16)  # shortest edge 20 -> 16 (16x19), centre crop 16x16
    with torch.no_grad():
        ref = model.visual_projection(model.vision_model(pixel_values=px).pooler_output)
    torch.testing.assert_close(ex(x), ref, atol=1e-6, rtol=1e-5)
    # the vision tower alone: pooler_output (post-layernorm class token)
    tower = tr.CLIPVisionModel(tr.CLIPVisionConfig(**VIT)).eval()
    tower.save_pretrained(tmp_path / "tower")
    ex2 = load_extractor(tmp_path / "tower")
    with torch.no_grad():
        ref2 = tower(pixel_values=ex2.preprocess(x)).pooler_output
    torch.testing.assert_close(ex2(x), ref2, atol=1e-6, rtol=1e-5)


class _Tiny(nn.Module):
    def __init__(self, cin: int = 3, dim: int = 6) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, dim, 3, padding=1)

    def forward(self, x: torch.Tensor, scale_out: float = 1.0) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3)) * scale_out


def test_torchscript_extractor_scale_channels_and_kwargs(tmp_path):
    torch.manual_seed(0)
    net = _Tiny().eval()
    torch.jit.save(torch.jit.script(net), tmp_path / "f.pt")
    ex = TorchScriptExtractor(tmp_path / "f.pt", scale=2.0, channels=3, expect_dim=6,
                              call_kwargs={"scale_out": 3.0})
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        ref = net(x.expand(-1, 3, -1, -1) * 2.0) * 3.0
    torch.testing.assert_close(ex(x), ref)
    xg = x.clone().requires_grad_(True)
    ex(xg).sum().backward()
    assert xg.grad.abs().sum() > 0
    assert isinstance(load_extractor(tmp_path / "f.pt"), TorchScriptExtractor)
    assert ex.fingerprint != TorchScriptExtractor(tmp_path / "f.pt", channels=3).fingerprint
    with pytest.raises(ValueError, match="declares dim=5"):
        TorchScriptExtractor(tmp_path / "f.pt", channels=3, expect_dim=5)(x)


class _FakeInception(nn.Module):
    """Stand-in with the StyleGAN3 Inception signature: forward(img, return_features)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.linspace(-1, 1, 3 * 2048).reshape(3, 2048))

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        assert x.shape[1] == 3
        feats = x.mean(dim=(2, 3)) @ self.w
        if return_features:
            return feats
        return feats[:, :1008]


def test_inception_calling_convention(tmp_path):
    torch.jit.save(torch.jit.script(_FakeInception()), tmp_path / "inception-2015-12-05.pt")
    ex = load_extractor(f"inception:{tmp_path / 'inception-2015-12-05.pt'}")
    assert isinstance(ex, InceptionFIDExtractor) and ex.dim == 2048
    x = torch.rand(3, 1, 10, 10, generator=torch.Generator().manual_seed(0))
    w = torch.linspace(-1, 1, 3 * 2048).reshape(3, 2048)
    expected = (x * 255).expand(-1, 3, -1, -1).mean(dim=(2, 3)) @ w  # 0-255, 3 channels
    torch.testing.assert_close(ex(x), expected, rtol=1e-5, atol=1e-3)
    assert "inception" in ex.name
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_extractor(f"inception:{tmp_path / 'nope.pt'}")


def test_feature_cnn_checkpoint(tmp_path):
    torch.manual_seed(0)
    cnn = FeatureCNN(ExtractorConfig(image_size=8, widths=(4, 8), feature_dim=12,
                                     num_classes=3))
    save_checkpoint(cnn, tmp_path / "e.safetensors", "extractor",
                    {"image_size": 8, "widths": [4, 8], "feature_dim": 12, "num_classes": 3})
    ex = load_extractor(tmp_path / "e.safetensors")
    assert isinstance(ex, TamisCNNExtractor) and ex.dim == 12 and ex.image_size == 8
    x = torch.rand(5, 1, 8, 8)
    torch.testing.assert_close(ex(x), load_checkpoint(tmp_path / "e.safetensors").features(x))
    torch.testing.assert_close(ex(x.expand(-1, 3, -1, -1)), ex(x))  # RGB averaged to grey
    with pytest.raises(ValueError, match="takes 8x8 images, got 16x16"):
        ex(torch.rand(2, 1, 16, 16))
    gcfg = GANConfig(latent_dim=4, image_size=8, g_channels=8, d_channels=4)
    save_checkpoint(Generator(gcfg), tmp_path / "g.safetensors", "generator", gcfg.to_dict())
    with pytest.raises(ValueError, match="g.safetensors: a Generator checkpoint, not a "
                                         "FeatureCNN"):
        load_extractor(tmp_path / "g.safetensors")


def test_callable_extractor_fingerprints():
    torch.manual_seed(0)
    m1, m2 = _Tiny(), _Tiny()
    a, b = CallableExtractor(m1), CallableExtractor(m2)
    assert a.fingerprint != b.fingerprint
    assert a.fingerprint == CallableExtractor(m1).fingerprint
    f = CallableExtractor(lambda x: x.flatten(1), name="flat")
    assert f.fingerprint == CallableExtractor(lambda x: x, name="flat").fingerprint
    assert f.fingerprint != CallableExtractor(lambda x: x, name="other").fingerprint
    with pytest.raises(ValueError, match="needs name"):
        CallableExtractor(lambda x: x)
    feats = extract_features(f, np.full((7, 2, 2), 255, dtype=np.uint8), batch_size=3)
    assert feats.dtype == np.float32 and feats.shape == (7, 4) and (feats == 1.0).all()


def test_bad_paths_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt does not exist"):
        load_extractor(tmp_path / "missing.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no config.json"):
        load_extractor(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="notes.txt is not an extractor"):
        load_extractor(tmp_path / "notes.txt")
    (tmp_path / "junk.pt").write_bytes(b"not torchscript")
    with pytest.raises(ValueError, match="junk.pt is not a TorchScript file"):
        load_extractor(tmp_path / "junk.pt")
    torch.save({"w": torch.ones(2)}, tmp_path / "state.pt")
    with pytest.raises(ValueError, match="state.pt is not a TorchScript file"):
        load_extractor(tmp_path / "state.pt")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(ValueError, match="junk.safetensors"):
        load_extractor(tmp_path / "junk.safetensors")


def test_wrong_shapes_and_non_finite_features_are_refused():
    x = torch.rand(4, 1, 4, 4)
    three_d = CallableExtractor(lambda t: t[:, 0], name="three_d")
    with pytest.raises(ValueError, match=r"three_d returned shape \(4, 4, 4\).*2-D"):
        extract_features(three_d, x)
    short = CallableExtractor(lambda t: t.flatten(1)[:-1], name="short")
    with pytest.raises(ValueError, match="short returned 3 feature rows for 4 images"):
        extract_features(short, x)
    declared = CallableExtractor(lambda t: t.flatten(1), name="decl", dim=10)
    with pytest.raises(ValueError, match="decl returned features of width 16, but declares "
                                         "dim=10"):
        declared(x)

    def nan_rows(t: torch.Tensor) -> torch.Tensor:
        f = t.flatten(1).clone()
        f[1, 0] = float("nan")
        f[3, 2] = float("inf")
        return f

    with pytest.raises(ValueError, match=r"nan_rows returned NaN or infinite features in 2 of "
                                         r"4 row\(s\) \(first at row 1\)"):
        extract_features(CallableExtractor(nan_rows, name="nan_rows"), x)
    with pytest.raises(ValueError, match="returned dict, not a tensor"):
        CallableExtractor(lambda t: {"f": t}, name="d")(x)
    with pytest.raises(ValueError, match=r"needs images \(B, C, H, W\)"):
        CallableExtractor(lambda t: t, name="id")(torch.rand(4, 4))
    with pytest.raises(ValueError, match="floats must be in"):
        as_images(np.full((2, 3, 3), 2.0))
    with pytest.raises(ValueError, match="expected"):
        as_images(np.zeros((2, 3)))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 6), shape=st.lists(st.integers(0, 6), min_size=0, max_size=3),
       dim=st.one_of(st.none(), st.integers(1, 6)))
def test_check_features_accepts_exactly_n_by_dim(n, shape, dim):
    feats = torch.zeros(shape)
    ok = len(shape) == 2 and shape[0] == n and (dim is None or shape[1] == dim)
    if ok:
        assert check_features(feats, n, name="fz", dim=dim) is feats
    else:
        with pytest.raises(ValueError, match="extractor fz"):
            check_features(feats, n, name="fz", dim=dim)
