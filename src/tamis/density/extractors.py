"""Feature extractors users already have, behind one small interface.

An *extractor* maps images ``(B, C, H, W)`` in [0, 1] to features ``(B, D)``, differentiably
(the perturbation technique backpropagates through it), and names itself by a
:attr:`~FeatureExtractor.fingerprint` (a short sha256 of its weights and preprocessing
settings) that keys the feature caches of :mod:`tamis.density.cache`. Implementations:

* :class:`HFVisionExtractor`: any transformers vision backbone (ViT, DINOv2, CLIP, ...) from a
  local directory, with the image processor's resize and normalisation redone in torch.
* :class:`TorchScriptExtractor`: a ``torch.jit.save`` file.
* :class:`InceptionFIDExtractor`: the StyleGAN2-ADA / StyleGAN3 TorchScript FID Inception
  (``inception-2015-12-05.pt``), when the user has the weights file.
* :class:`CallableExtractor`: any function or ``nn.Module``.
* :class:`TamisCNNExtractor`: the in-house :class:`~tamis.density.models.FeatureCNN`
  checkpoints.

:func:`load_extractor` opens any of them from a path; :func:`extract_features` embeds many
images without gradients; :func:`check_features` is the output check they all share.
Nothing here downloads anything, and ``transformers`` is imported only when an HF model is
opened.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CallableExtractor",
    "FeatureExtractor",
    "HFVisionExtractor",
    "InceptionFIDExtractor",
    "TamisCNNExtractor",
    "TorchScriptExtractor",
    "as_images",
    "check_features",
    "extract_features",
    "load_extractor",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@runtime_checkable
class FeatureExtractor(Protocol):
    """What :mod:`tamis.density` needs of a feature extractor.

    Calling maps images ``(B, C, H, W)`` in [0, 1] to a ``(B, D)`` float tensor,
    differentiably; ``fingerprint`` is a short stable string that changes when the weights or
    the preprocessing change; ``dim`` is ``D`` when known (else ``None``).
    """

    @property
    def fingerprint(self) -> str:
        """Short hash of the weights and preprocessing settings."""
        ...

    @property
    def dim(self) -> int | None:
        """Feature width ``D``, or ``None`` if unknown before a first call."""
        ...

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Features ``(B, D)`` of images ``(B, C, H, W)`` in [0, 1]."""
        ...


# -- shared helpers ----------------------------------------------------------------------------


def _sha(*parts: object) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()


def module_hash(module: nn.Module) -> str:
    """sha256 hex digest of a module's class name and state (names, dtypes, shapes, bytes).

    TorchScript modules hash their ``state_dict`` like any other module.
    """
    h = hashlib.sha256(type(module).__name__.encode())
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def extractor_name(extractor: object) -> str:
    """A readable name for messages: ``extractor.name`` if it has one, else its class name."""
    name = getattr(extractor, "name", None)
    return str(name) if name else type(extractor).__name__


def check_features(
    features: object, n: int, *, name: str = "extractor", dim: int | None = None
) -> torch.Tensor:
    """Check that an extractor returned ``(n, dim)`` finite features, and return them.

    Args:
        features: what the extractor returned.
        n: the batch size it was given.
        name: the extractor's name, for the message.
        dim: the declared feature width, or ``None`` to accept any.

    Returns:
        ``features`` as a tensor (unchanged, gradients kept).

    Raises:
        ValueError: if it is not a tensor, not 2-D, has another batch size or width than
            declared, or has rows with NaN or infinite values (the count and first row named).

    """
    if isinstance(features, np.ndarray):
        features = torch.from_numpy(features)
    if not isinstance(features, torch.Tensor):
        raise ValueError(f"extractor {name} returned {type(features).__name__}, not a tensor "
                         "of features (B, D)")
    if features.ndim != 2:
        raise ValueError(f"extractor {name} returned shape {tuple(features.shape)} for {n} "
                         "images; features must be 2-D (B, D)")
    if features.shape[0] != n:
        raise ValueError(f"extractor {name} returned {features.shape[0]} feature rows for {n} "
                         f"images (shape {tuple(features.shape)}): one row per image expected")
    if dim is not None and features.shape[1] != dim:
        raise ValueError(f"extractor {name} returned features of width {features.shape[1]}, "
                         f"but declares dim={dim}")
    if not features.is_floating_point():
        raise ValueError(f"extractor {name} returned dtype {features.dtype}, not floats")
    bad = ~torch.isfinite(features.detach()).all(dim=1)
    if bool(bad.any()):
        first = int(torch.nonzero(bad)[0, 0])
        raise ValueError(f"extractor {name} returned NaN or infinite features in "
                         f"{int(bad.sum())} of {n} row(s) (first at row {first})")
    return features


def as_images(x: object, what: str = "images") -> torch.Tensor:
    """Images as a float32 tensor ``(N, C, H, W)`` in [0, 1].

    Accepts numpy arrays or tensors ``(N, H, W)`` (a channel axis is added) or
    ``(N, C, H, W)``; ``uint8`` is divided by 255; floats must already lie in [0, 1]
    (1e-3 slack for rounding, then clipped).

    Raises:
        ValueError: for another rank, a non-numeric dtype, or floats outside [0, 1].

    """
    if isinstance(x, torch.Tensor):
        t = x
    else:
        arr = np.asarray(x)
        t = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
    if t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"{what} have dtype {t.dtype}, not real numbers")
    if t.ndim == 3:
        t = t[:, None]
    if t.ndim != 4:
        raise ValueError(f"{what} have shape {tuple(t.shape)}; expected (N, H, W) or "
                         "(N, C, H, W)")
    if t.dtype == torch.uint8:
        return t.float() / 255.0
    if not t.is_floating_point():
        raise ValueError(f"{what} have integer dtype {t.dtype}: pass uint8 (0-255) or floats "
                         "in [0, 1]")
    if t.numel():
        lo, hi = float(t.min()), float(t.max())
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError(f"{what} contain NaN or infinite values")
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(f"{what} have values in [{lo:.3g}, {hi:.3g}]; floats must be in "
                             "[0, 1] (or pass uint8 0-255)")
    return t.float().clamp(0, 1)


def _check_input(images: torch.Tensor, name: str) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)
        raise ValueError(f"extractor {name} needs images (B, C, H, W), got {shape}")


def _to_channels(x: torch.Tensor, channels: int | None, name: str) -> torch.Tensor:
    if channels is None or x.shape[1] == channels:
        return x
    if x.shape[1] == 1:
        return x.expand(-1, channels, -1, -1)
    if channels == 1 and x.shape[1] == 3:
        return x.mean(dim=1, keepdim=True)
    raise ValueError(f"extractor {name} takes {channels}-channel images, got {x.shape[1]} "
                     "channels")


class _Extractor:
    """Base class: input check, the model call, output check."""

    name: str = "extractor"
    _dim: int | None = None

    @property
    def dim(self) -> int | None:
        """Feature width ``D`` if known."""
        return self._dim

    @property
    def fingerprint(self) -> str:
        """Short hash of the weights and the preprocessing settings."""
        raise NotImplementedError

    def _forward(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Features ``(B, D)`` (float32) of images ``(B, C, H, W)`` in [0, 1], differentiable.

        Raises:
            ValueError: on input that is not 4-D, or output :func:`check_features` refuses.

        """
        _check_input(images, self.name)
        out = check_features(self._forward(images), images.shape[0], name=self.name,
                             dim=self._dim)
        if self._dim is None:
            self._dim = int(out.shape[1])
        return out.float()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, dim={self._dim})"


def _freeze(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


def _param_device_dtype(module: nn.Module) -> tuple[torch.device, torch.dtype | None]:
    p = next(iter(module.parameters()), None)
    if p is None:
        return torch.device("cpu"), None
    return p.device, p.dtype


# -- transformers ------------------------------------------------------------------------------

_CLS_FAMILIES = {"vit", "dinov2", "dinov2_with_registers", "deit", "vit_msn", "dinov3_vit"}
_RESAMPLE = {0: "nearest", 1: "bilinear", 2: "bilinear", 3: "bicubic", 4: "bilinear",
             5: "bicubic"}  # PIL codes; 1 (lanczos), 4 (box), 5 (hamming) approximated


def _hw(value: object) -> tuple[int, int] | None:
    if isinstance(value, int):
        return value, value
    if isinstance(value, Mapping) and "height" in value and "width" in value:
        return int(value["height"]), int(value["width"])
    return None


class HFVisionExtractor(_Extractor):
    """A transformers vision backbone as a differentiable extractor (torch preprocessing).

    Preprocessing, done in torch so that gradients reach the input: grey images are repeated
    to 3 channels when the model takes 3; images are resized to the processor's ``size``
    (``{"height", "width"}``, or ``{"shortest_edge"}`` followed by a centre crop to
    ``crop_size`` when ``do_center_crop``; ``resample`` 2 = bilinear, 3 = bicubic, with
    antialiasing), rescaled (inputs in [0, 1] are the processor's ``x_255 * rescale_factor``, so
    they are multiplied by ``255 * rescale_factor``, i.e. 1 for the usual 1/255; by 1 when
    ``do_rescale`` is false) and normalised by ``image_mean`` / ``image_std``. Without a
    ``preprocessor_config.json`` the model config's ``image_size`` and the ImageNet mean/std are
    used. Parameters are frozen (``requires_grad=False``) and the model is in eval mode.

    Pooling (``pooling="auto"`` picks, per model family):

    * models with ``get_image_features`` (``CLIPModel``, SigLIP): the projected image
      embedding (CLIP's image embedding);
    * ViT, DeiT, DINOv2 (``model_type`` vit / deit / dinov2 / vit_msn): ``"cls"``, the class
      token of the final (layer-normed) hidden states -- ViT's ``pooler`` (dense + tanh) is left
      out as it is untrained in many checkpoints;
    * others (``CLIPVisionModel``, ConvNeXt, ResNet, Swin...): ``"pooler"`` when the model
      returns a ``pooler_output``, else ``"mean"``.

    ``"cls"``: token 0 of ``last_hidden_state``; ``"mean"``: mean over the patch tokens (class
    and register tokens excluded for the families above; spatial mean for 4-D outputs);
    ``"pooler"``: ``pooler_output``. For a ``CLIPModel`` the explicit options act on its vision
    tower.

    Args:
        model: the loaded transformers model.
        settings: preprocessing (``size``, ``crop_size``, ``do_center_crop``, ``resample``,
            ``do_rescale``, ``rescale_factor``, ``image_mean``, ``image_std``,
            ``do_normalize``, ``num_channels``).
        pooling: ``"auto"``, ``"cls"``, ``"mean"`` or ``"pooler"``.
        name: shown in messages.

    """

    def __init__(self, model: nn.Module, settings: Mapping[str, Any], pooling: str = "auto",
                 name: str | None = None) -> None:
        if pooling not in ("auto", "cls", "mean", "pooler"):
            raise ValueError(f"pooling must be 'auto', 'cls', 'mean' or 'pooler', got "
                             f"{pooling!r}")
        self.model = _freeze(model)
        self.settings = dict(settings)
        cfg = model.config
        self.model_type = str(getattr(cfg, "model_type", ""))
        vcfg = getattr(cfg, "vision_config", None) or cfg
        self.vision_type = str(getattr(vcfg, "model_type", self.model_type))
        self.name = name or self.model_type or type(model).__name__
        self.projected = hasattr(model, "get_image_features")
        if pooling == "auto":
            if self.projected:
                pooling = "projection"
            elif self.vision_type in _CLS_FAMILIES:
                pooling = "cls"
            else:
                pooling = "pooler_or_mean"
        self.pooling = pooling
        self._prefix = 1 + int(getattr(vcfg, "num_register_tokens", 0) or 0)
        # the width is declared only where it is certain; elsewhere the first call sets it
        hidden = getattr(vcfg, "hidden_size", None)
        if pooling == "projection":
            proj = getattr(cfg, "projection_dim", None)
            self._dim = int(proj) if proj else None
        elif pooling in ("cls", "mean") and hidden and self.vision_type in _CLS_FAMILIES:
            self._dim = int(hidden)
        self._fp: str | None = None

    @classmethod
    def from_pretrained(
        cls, path: str | Path, pooling: str = "auto", *, dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> HFVisionExtractor:
        """Open a transformers model directory (``save_pretrained``); nothing is downloaded.

        Reads ``AutoImageProcessor.from_pretrained(path)`` settings when the directory has a
        ``preprocessor_config.json``, else the model config's ``image_size`` and ImageNet
        mean/std.

        Raises:
            FileNotFoundError: if the path does not exist.
            ValueError: if it has no ``config.json`` or transformers cannot open it.

        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"extractor path {path} does not exist")
        if not (path / "config.json").is_file():
            raise ValueError(f"{path} is not a transformers model directory (no config.json)")
        from transformers import AutoModel

        try:
            model = AutoModel.from_pretrained(str(path), local_files_only=True, dtype=dtype)
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(f"transformers cannot open {path} as a model: "
                             f"{str(err).splitlines()[0]}") from None
        model = model.to(device)
        return cls(model, _processor_settings(path, model.config), pooling=pooling,
                   name=path.name or str(path))

    @property
    def fingerprint(self) -> str:
        """sha256 (16 hex) of the weights, preprocessing settings and pooling (computed once)."""
        if self._fp is None:
            self._fp = _sha("hf", module_hash(self.model), self.settings, self.pooling)[:16]
        return self._fp

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """The model's ``pixel_values`` for images ``(B, C, H, W)`` in [0, 1] (differentiable)."""
        s = self.settings
        device, dtype = _param_device_dtype(self.model)
        x = images.to(device=device, dtype=torch.float32 if dtype is None else dtype)
        x = _to_channels(x, int(s.get("num_channels", 3)), self.name)
        if s.get("do_resize", True):
            mode = _RESAMPLE.get(int(s.get("resample", 2)), "bilinear")
            size = s.get("size")
            hw = _hw(size)
            if hw is None and isinstance(size, Mapping) and "shortest_edge" in size:
                short = int(size["shortest_edge"])
                h, w = x.shape[-2:]
                hw = ((short, int(short * w / h)) if h <= w else (int(short * h / w), short))
            if hw is not None and tuple(x.shape[-2:]) != hw:
                x = F.interpolate(x, size=hw, mode=mode, align_corners=False,
                                  antialias=mode != "nearest")
        crop = _hw(s.get("crop_size")) if s.get("do_center_crop", False) else None
        if crop is not None:
            h, w = x.shape[-2:]
            top, left = max((h - crop[0]) // 2, 0), max((w - crop[1]) // 2, 0)
            x = x[..., top : top + crop[0], left : left + crop[1]]
        if s.get("do_rescale", True):
            x = x * (255.0 * float(s.get("rescale_factor", 1 / 255)))
        if s.get("do_normalize", True):
            mean = torch.tensor(s.get("image_mean", IMAGENET_MEAN), dtype=x.dtype,
                                device=x.device)
            std = torch.tensor(s.get("image_std", IMAGENET_STD), dtype=x.dtype, device=x.device)
            x = (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
        return x

    def features_from_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pooled features of already preprocessed ``pixel_values``."""
        if self.pooling == "projection":
            out = self.model.get_image_features(pixel_values=pixel_values)
            return out if isinstance(out, torch.Tensor) else out.pooler_output
        tower = getattr(self.model, "vision_model", None) if self.projected else None
        out = (tower or self.model)(pixel_values=pixel_values)
        if self.pooling in ("pooler", "pooler_or_mean"):
            pooled = getattr(out, "pooler_output", None)
            if pooled is not None:
                return pooled.reshape(pooled.shape[0], -1)
            if self.pooling == "pooler":
                raise ValueError(f"extractor {self.name}: {type(self.model).__name__} returns "
                                 "no pooler_output; use pooling='cls' or 'mean'")
        hidden = out.last_hidden_state
        if hidden.ndim == 4:  # convolutional backbones: (B, C, h, w)
            return hidden.mean(dim=(2, 3))
        if self.pooling == "cls":
            return hidden[:, 0]
        prefix = self._prefix if self.vision_type in _CLS_FAMILIES else 0
        return hidden[:, prefix:].mean(dim=1)

    def _forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features_from_pixels(self.preprocess(images))


def _processor_settings(path: Path, config: Any) -> dict[str, Any]:
    vcfg = getattr(config, "vision_config", None) or config
    size = getattr(vcfg, "image_size", None)
    settings: dict[str, Any] = {
        "num_channels": int(getattr(vcfg, "num_channels", 3) or 3),
        "size": ({"height": int(size), "width": int(size)} if isinstance(size, int)
                 else _hw(size) and dict(zip(("height", "width"), _hw(size), strict=True))),
        "do_resize": size is not None, "resample": 2, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": list(IMAGENET_MEAN), "image_std": list(IMAGENET_STD),
    }
    if (path / "preprocessor_config.json").is_file():
        proc: dict[str, Any]
        try:
            import transformers

            verbosity = transformers.logging.get_verbosity()
            transformers.logging.set_verbosity_error()
            try:
                proc = transformers.AutoImageProcessor.from_pretrained(
                    str(path), local_files_only=True).to_dict()
            finally:
                transformers.logging.set_verbosity(verbosity)
        except (OSError, ValueError, KeyError, ImportError, AttributeError):
            proc = json.loads((path / "preprocessor_config.json").read_text())
        for key in ("size", "crop_size", "do_center_crop", "resample", "do_resize",
                    "do_rescale", "rescale_factor", "do_normalize", "image_mean", "image_std"):
            if proc.get(key) is not None:
                val = proc[key]
                settings[key] = list(val) if isinstance(val, tuple) else val
        if "resample" in settings and not isinstance(settings["resample"], int):
            settings["resample"] = int(settings["resample"])
    return settings


# -- TorchScript, Inception, callables, FeatureCNN ---------------------------------------------


def _jit_load(path: Path, what: str) -> torch.jit.ScriptModule:
    if not path.exists():
        raise FileNotFoundError(f"{what} file {path} does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch >= 2.9 deprecates jit
            return torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"{path} is not a TorchScript file (torch.jit.load: "
                         f"{str(err).splitlines()[0]}); save extractors with torch.jit.save"
                         ) from None


class TorchScriptExtractor(_Extractor):
    """A TorchScript model (``torch.jit.save``) as an extractor.

    Calls ``model(x * scale, **call_kwargs)`` where ``x`` are the [0, 1] images, repeated from
    grey to 3 channels when ``channels=3``. A tuple/list output gives its first element;
    ``(B, D, 1, 1)`` pooled maps are flattened to ``(B, D)``. Parameters are frozen.

    Args:
        path: the TorchScript file.
        scale: input multiplier (e.g. 255 for models that take 0-255 pixels).
        call_kwargs: extra keyword arguments of every call.
        expect_dim: declared feature width (checked on every call).
        channels: convert inputs to this many channels (1 <-> 3), or ``None`` to leave them.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if it is not TorchScript.

    """

    def __init__(self, path: str | Path, scale: float = 1.0,
                 call_kwargs: Mapping[str, Any] | None = None, expect_dim: int | None = None,
                 channels: int | None = None) -> None:
        self.path = Path(path)
        self.model = _freeze(_jit_load(self.path, "extractor"))
        self.scale = float(scale)
        self.call_kwargs = dict(call_kwargs or {})
        self.channels = channels
        self._dim = expect_dim
        self.name = self.path.name
        self._fp: str | None = None

    @property
    def fingerprint(self) -> str:
        """sha256 (16 hex) of the weights, scale, channels and call arguments."""
        if self._fp is None:
            self._fp = _sha("torchscript", module_hash(self.model), self.scale, self.channels,
                            self.call_kwargs)[:16]
        return self._fp

    def _forward(self, images: torch.Tensor) -> torch.Tensor:
        device, dtype = _param_device_dtype(self.model)
        x = _to_channels(images.to(device), self.channels, self.name)
        if dtype is not None and dtype.is_floating_point:
            x = x.to(dtype)
        out = self.model(x * self.scale if self.scale != 1.0 else x, **self.call_kwargs)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if isinstance(out, torch.Tensor) and out.ndim == 4 and out.shape[2:] == (1, 1):
            out = out.flatten(1)
        return out


class InceptionFIDExtractor(TorchScriptExtractor):
    """The standard FID Inception-v3 pool features (2048-d), from a local weights file.

    Follows the StyleGAN2-ADA / StyleGAN3 TorchScript convention of
    ``inception-2015-12-05.pt`` (the TF-FID Inception): the model is called as
    ``model(images, return_features=True)`` with 3-channel NCHW images in 0-255 (our [0, 1]
    images times 255, grey repeated to 3 channels; float, not rounded, so gradients flow) and
    returns ``(B, 2048)``; the model resizes to 299 itself. Only this calling convention is
    tested here, against a stand-in scripted module of the same signature: the real weights
    cannot be downloaded in this project, so bring the file yourself.

    Args:
        path: the TorchScript Inception file.

    """

    def __init__(self, path: str | Path) -> None:
        super().__init__(path, scale=255.0, call_kwargs={"return_features": True},
                         expect_dim=2048, channels=3)
        self.name = f"inception:{self.path.name}"


class CallableExtractor(_Extractor):
    """Any function or ``nn.Module`` mapping [0, 1] images to ``(B, D)`` features.

    The fingerprint hashes the module's class and weights (plus ``name``) for a module, and
    only ``name`` for a plain function -- so give different functions different names, or the
    feature caches cannot tell them apart. The module is called as is (not frozen, not moved).

    Args:
        fn: the callable.
        name: its name (required for a plain function; a module defaults to its class name).
        dim: declared feature width, checked on every call.

    Raises:
        ValueError: if ``fn`` is not a module and no ``name`` is given.

    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], name: str | None = None,
                 dim: int | None = None) -> None:
        if not isinstance(fn, nn.Module) and not name:
            raise ValueError("CallableExtractor of a plain function needs name=...: the name "
                             "is its fingerprint")
        self.fn = fn
        self.name = name or type(fn).__name__
        self._dim = dim

    @property
    def fingerprint(self) -> str:
        """sha256 (16 hex) of the name and, for a module, its weights (recomputed each time)."""
        if isinstance(self.fn, nn.Module):
            return _sha("module", self.name, module_hash(self.fn))[:16]
        return _sha("callable", self.name)[:16]

    def _forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fn(images)


class TamisCNNExtractor(_Extractor):
    """The in-house :class:`~tamis.density.models.FeatureCNN` (``.features``) as an extractor.

    Takes grey images of the checkpoint's size; 3-channel input is averaged to grey.

    Args:
        model: a ``FeatureCNN``, or the path of a tamis ``.safetensors`` extractor checkpoint.

    Raises:
        ValueError: if the checkpoint is not a tamis extractor checkpoint.

    """

    def __init__(self, model: nn.Module | str | Path) -> None:
        from tamis.density.models import FeatureCNN, load_checkpoint

        name = "FeatureCNN"
        if not isinstance(model, nn.Module):
            path = Path(model)
            if not path.exists():
                raise FileNotFoundError(f"extractor checkpoint {path} does not exist")
            try:
                model = load_checkpoint(path)
            except ValueError:
                raise
            except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
                msg = str(err).splitlines()[0] if str(err) else type(err).__name__
                raise ValueError(f"{path} is not a readable safetensors checkpoint "
                                 f"({msg})") from None
            name = path.name
        if not isinstance(model, FeatureCNN):
            raise ValueError(f"{name}: a {type(model).__name__} checkpoint, not a FeatureCNN "
                             "extractor")
        self.model = _freeze(model)
        self.name = name
        self._dim = int(model.body[-2].out_features)
        side = (model.body[-2].in_features / model.body[3].out_channels) ** 0.5
        self.image_size = 4 * round(side)
        self._fp: str | None = None

    @property
    def fingerprint(self) -> str:
        """sha256 (16 hex) of the weights (computed once)."""
        if self._fp is None:
            self._fp = _sha("featurecnn", module_hash(self.model))[:16]
        return self._fp

    def _forward(self, images: torch.Tensor) -> torch.Tensor:
        if tuple(images.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(f"extractor {self.name} takes {self.image_size}x{self.image_size} "
                             f"images, got {images.shape[-2]}x{images.shape[-1]}")
        return self.model.features(_to_channels(images, 1, self.name))


# -- opening and batching ----------------------------------------------------------------------

_TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".torchscript", ".jit")


def load_extractor(path_or_spec: str | Path, **kwargs: Any) -> _Extractor:
    """Open an extractor from a path or spec.

    * ``inception:PATH``: :class:`InceptionFIDExtractor` of a local TorchScript Inception;
    * a directory with ``config.json``: :class:`HFVisionExtractor` (``kwargs`` go to
      ``from_pretrained``: ``pooling``, ``dtype``, ``device``);
    * a ``.safetensors`` file: a tamis ``FeatureCNN`` checkpoint (:class:`TamisCNNExtractor`);
    * a ``.pt`` / ``.pth`` / ``.torchscript`` / ``.jit`` file: :class:`TorchScriptExtractor`
      (``kwargs`` go to its constructor).

    Raises:
        FileNotFoundError: if the path does not exist.
        ValueError: if it is none of these, or cannot be opened as the kind it looks like.

    """
    spec = str(path_or_spec)
    if spec.startswith("inception:"):
        return InceptionFIDExtractor(spec[len("inception:"):])
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"extractor path {path} does not exist")
    if path.is_dir():
        if (path / "config.json").is_file():
            return HFVisionExtractor.from_pretrained(path, **kwargs)
        raise ValueError(f"extractor directory {path} has no config.json: not a transformers "
                         "model (expected a save_pretrained directory, a .safetensors tamis "
                         "checkpoint, a TorchScript .pt file or inception:PATH)")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return TamisCNNExtractor(path)
    if suffix in _TORCHSCRIPT_SUFFIXES:
        return TorchScriptExtractor(path, **kwargs)
    raise ValueError(f"{path} is not an extractor: expected a transformers directory with "
                     "config.json, a .safetensors tamis checkpoint, a TorchScript file "
                     f"({', '.join(_TORCHSCRIPT_SUFFIXES)}) or inception:PATH")


def iter_batches(images: object, batch_size: int, start: int = 0) -> Iterable[torch.Tensor]:
    """Yield ``as_images`` batches of ``images`` rows ``[start, N)`` (numpy memmaps stay lazy)."""
    n = len(images)  # type: ignore[arg-type]
    for s in range(start, n, batch_size):
        yield as_images(images[s : s + batch_size])  # type: ignore[index]


def extract_features(
    extractor: Callable[[torch.Tensor], torch.Tensor], images: object, batch_size: int = 256,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Features of many images, without gradients, in batches, checked.

    Args:
        extractor: any extractor (or callable images -> ``(B, D)``).
        images: ``(N, C, H, W)`` or ``(N, H, W)`` tensor or array, floats in [0, 1] or uint8.
        batch_size: images per call.
        progress: called with the number of images done after each batch.

    Returns:
        float32 ``(N, D)`` features.

    Raises:
        ValueError: for bad images or a misbehaving extractor (see :func:`check_features`).

    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    name = extractor_name(extractor)
    dim = getattr(extractor, "dim", None)
    n = len(images)  # type: ignore[arg-type]
    if n == 0:
        raise ValueError("no images to embed (N = 0)")
    out: list[np.ndarray] = []
    done = 0
    with torch.no_grad():
        for batch in iter_batches(images, batch_size):
            f = check_features(extractor(batch), batch.shape[0], name=name, dim=dim)
            dim = int(f.shape[1])
            out.append(f.detach().float().cpu().numpy())
            done += batch.shape[0]
            if progress is not None:
                progress(done)
    return np.concatenate(out)
