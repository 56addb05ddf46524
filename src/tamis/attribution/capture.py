"""Batched per-example capture with hooks: projected layer inputs and output-gradients.

For every tracked layer, a forward hook projects its inputs, A = X P_in (B x T x d1), and a
tensor hook on its output projects the output-gradient, B = dY P_out (B x T x d2), as soon
as backward produces it. One forward and one backward per batch; no loop over examples.
``nn.Conv2d`` is handled as a linear map over unfolded patches (T = number of positions);
transformers' GPT-2-style ``Conv1D`` (weight of shape (in, out)) as a Linear layer.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tamis.attribution.config import ProjectionConfig
from tamis.attribution.data import model_device, to_device
from tamis.attribution.errors import NonFiniteError, UnsupportedModuleError
from tamis.attribution.projection import LayerSpec, layer_projections, layer_spec


def is_conv1d(module: nn.Module) -> bool:
    """True for transformers' GPT-2-style Conv1D: y = x W + b with W of shape (in, out)."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or is_conv1d(module)


def _layer_dims(name: str, module: nn.Module, include_bias: bool) -> tuple[int, int]:
    if isinstance(module, nn.Linear):
        in_dim, out_dim = module.in_features, module.out_features
    elif is_conv1d(module):
        in_dim, out_dim = module.weight.shape[0], module.nf
    elif isinstance(module, nn.Conv2d):
        if module.groups != 1:
            raise UnsupportedModuleError(f"Conv2d {name!r} has groups={module.groups}; only 1")
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            raise UnsupportedModuleError(
                f"Conv2d {name!r} uses padding={module.padding!r}/{module.padding_mode!r}; "
                "only numeric zero padding is supported"
            )
        kh, kw = module.kernel_size
        in_dim, out_dim = module.in_channels * kh * kw, module.out_channels
    else:
        raise UnsupportedModuleError(
            f"module {name!r} is a {type(module).__name__}; tamis tracks nn.Linear, nn.Conv2d "
            "and transformers' Conv1D"
        )
    if include_bias and module.bias is not None:
        in_dim += 1
    return in_dim, out_dim


def find_modules(model: nn.Module, names: list[str] | None) -> dict[str, nn.Module]:
    """The tracked modules by name: ``names`` if given, else every Linear, Conv2d, Conv1D."""
    all_modules = dict(model.named_modules())
    if names is None:
        found = {n: m for n, m in all_modules.items()
                 if _is_linear(m) or isinstance(m, nn.Conv2d)}
        if not found:
            raise UnsupportedModuleError("the model has no nn.Linear or nn.Conv2d to track")
        return found
    if len(names) == 0:
        raise UnsupportedModuleError("tracked_modules() returned an empty list")
    missing = [n for n in names if n not in all_modules]
    if missing:
        raise UnsupportedModuleError(f"no module named {missing} in the model")
    return {n: all_modules[n] for n in names}


def resolve_layers(
    model: nn.Module, names: list[str] | None, cfg: ProjectionConfig
) -> dict[str, LayerSpec]:
    """LayerSpec of every tracked module (validates types and projection dims)."""
    specs = {}
    for name, module in find_modules(model, names).items():
        in_dim, out_dim = _layer_dims(name, module, cfg.include_bias)
        specs[name] = layer_spec(name, in_dim, out_dim, cfg)
    return specs


@dataclass
class LayerCapture:
    """Projected inputs A (B, T, d1) and output-gradients B (B, T, d2) of one layer."""

    a: torch.Tensor
    b: torch.Tensor


class GradientCapture:
    """Registers hooks on the tracked modules and returns projected per-example factors."""

    def __init__(
        self,
        model: nn.Module,
        specs: dict[str, LayerSpec],
        cfg: ProjectionConfig,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.model = model
        self.specs = specs
        self.cfg = cfg
        self.dtype = dtype
        modules = dict(model.named_modules())
        self.modules = {n: modules[n] for n in specs}
        # captures live on the model's device (batches are moved there); consumers that
        # accumulate on the CPU (store rows, curvature sums, query gradients) move them back
        self.device = model_device(model)
        self.proj = {n: tuple(None if p is None else p.to(self.device) for p in
                              layer_projections(s, cfg, dtype)) for n, s in specs.items()}
        self._a: dict[str, list[torch.Tensor]] = {}
        self._outputs: list[tuple[str, nn.Module, torch.Tensor]] = []
        # Linear layers fed (B, I) inputs have T = 1 by construction: rank-1 gradients.
        self.flat_input: dict[str, bool] = {}

    def _inputs_2d(self, name: str, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if isinstance(module, nn.Conv2d):
            if x.dim() == 3:
                x = x.unsqueeze(0)
            cols = F.unfold(x, module.kernel_size, module.dilation, module.padding, module.stride)
            x = cols.transpose(1, 2)  # (B, L, C*kh*kw)
        else:
            x = x.reshape(x.shape[0], -1, x.shape[-1]) if x.dim() != 2 else x.unsqueeze(1)
        x = x.to(self.dtype)
        if self.cfg.include_bias and module.bias is not None:
            x = torch.cat([x, x.new_ones(*x.shape[:2], 1)], dim=2)
        return x

    def _out_grads_2d(self, module: nn.Module, g: torch.Tensor) -> torch.Tensor:
        if isinstance(module, nn.Conv2d):
            if g.dim() == 3:
                g = g.unsqueeze(0)
            g = g.flatten(2).transpose(1, 2)  # (B, L, O)
        else:
            g = g.reshape(g.shape[0], -1, g.shape[-1]) if g.dim() != 2 else g.unsqueeze(1)
        return g.to(self.dtype)

    @contextmanager
    def hooks(self) -> Iterator[None]:
        """Context in which forward passes record projected inputs and layer outputs."""
        handles = []

        def make_forward(name: str):
            p_in = self.proj[name][0]

            def forward_hook(mod: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
                self.flat_input[name] = _is_linear(mod) and inputs[0].dim() == 2
                x = self._inputs_2d(name, mod, inputs[0].detach())
                self._a[name].append(x if p_in is None else x @ p_in)
                if not output.requires_grad:
                    raise UnsupportedModuleError(
                        f"output of {name!r} does not require grad; unfreeze its parameters"
                    )
                self._outputs.append((name, mod, output))

            return forward_hook

        for name, module in self.modules.items():
            handles.append(module.register_forward_hook(make_forward(name)))
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def capture(self, loss_fn, batch) -> dict[str, LayerCapture]:
        """Run ``loss_fn(batch, model)`` (per-example losses) forward and backward.

        Returns:
            Projected factors per tracked layer, with T stacked over repeated calls.

        Raises:
            NonFiniteError: if a loss or a captured gradient is NaN or infinite.
            ValueError: if the losses are not a 1-D tensor.

        """
        self._a = {n: [] for n in self.specs}
        self._outputs: list[tuple[str, nn.Module, torch.Tensor]] = []
        try:
            batch = to_device(batch, self.device)
            with self.hooks():
                losses = loss_fn(batch, self.model)
            if not isinstance(losses, torch.Tensor) or losses.dim() != 1:
                shape = getattr(losses, "shape", type(losses).__name__)
                raise ValueError(
                    f"the task must return per-example losses of shape (B,), got {shape}"
                )
            bad = ~torch.isfinite(losses.detach())
            if bad.any():
                idx = torch.nonzero(bad).flatten().tolist()[:10]
                raise NonFiniteError(f"non-finite loss for examples at batch positions {idx}")
            called = {name for name, _, _ in self._outputs}
            for name in self.specs:
                if name not in called:
                    raise UnsupportedModuleError(
                        f"module {name!r} was not called in the forward pass"
                    )
            grads = torch.autograd.grad(
                losses.sum(), [o for _, _, o in self._outputs], allow_unused=True
            )
            out_b: dict[str, list[torch.Tensor]] = {n: [] for n in self.specs}
            for (name, mod, _), g in zip(self._outputs, grads):
                if g is None:
                    raise UnsupportedModuleError(f"no gradient reaches module {name!r}")
                p_out = self.proj[name][1]
                g = self._out_grads_2d(mod, g)
                out_b[name].append(g if p_out is None else g @ p_out)
            out = {}
            for name in self.specs:
                a = torch.cat(self._a[name], dim=1)
                b = torch.cat(out_b[name], dim=1)
                if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
                    raise NonFiniteError(f"non-finite gradient captured at layer {name!r}")
                out[name] = LayerCapture(a, b)
            return out
        finally:
            self._a, self._outputs = {}, []
