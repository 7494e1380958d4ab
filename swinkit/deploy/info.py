"""Model facts without weights: parameters, multiply-adds per stage, activation memory, output shapes.

Everything runs on the meta device (shapes only, nothing allocated for weights or activations).
Multiply-adds are ``torch.utils.flop_counter`` FLOPs / 2 for matmuls, linears, convolutions and the
attention products (q kᵀ and attention · v; on the meta device attention runs as batched matmuls), the
way the papers' tables count; norms, softmax and element-wise ops are not counted.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from swinkit.deploy.inputs import default_input_shape, num_input_axes
from swinkit.models.registry import create_model

ATTENTION_OPS = ("aten.bmm", "aten.baddbmm", "aten._scaled_dot_product")


@dataclass(frozen=True)
class PartInfo:
    """One row of the breakdown: the stem, a stage (its blocks and the merging / embedding before them),
    or the head (final norm and classifier)."""

    name: str
    params: int
    macs: int
    attention_macs: int
    output_shape: tuple[int, ...] | None  # stage map (B, C, *grid), channels-first; None for the stem


@dataclass(frozen=True)
class ModelInfo:
    name: str
    family: str
    input_shape: tuple[int, ...]
    params: int
    trainable_params: int
    macs: int
    attention_macs: int
    activation_bytes: int | None  # what a training forward keeps for the backward pass (None: not computed)
    output_shape: tuple[int, ...]
    parts: tuple[PartInfo, ...]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def format(self) -> str:
        """A readable report: totals, then one row per part."""
        shape = "x".join(map(str, self.input_shape))
        lines = [
            f"{self.name} ({self.family}), input {shape}",
            f"  parameters        {_count(self.params)} ({self.params:,}; trainable {self.trainable_params:,})",
            f"  multiply-adds     {self.macs / 1e9:.2f} G (attention products {self.attention_macs / 1e9:.3f} G)",
            "  activations       " + ("not computed" if self.activation_bytes is None else
                                     f"{self.activation_bytes / 2 ** 20:,.1f} MiB kept for the backward pass "
                                     f"(fp32 training forward, batch {self.input_shape[0]})"),
            f"  output            {tuple(self.output_shape)}",
            "",
            f"  {'part':<8}{'params':>12}{'GMACs':>10}{'attn GMACs':>12}   output",
        ]
        for part in self.parts:
            out = "" if part.output_shape is None else str(tuple(part.output_shape))
            lines.append(f"  {part.name:<8}{_count(part.params):>12}{part.macs / 1e9:>10.3f}"
                         f"{part.attention_macs / 1e9:>12.3f}   {out}")
        lines.append(f"  {'total':<8}{_count(self.params):>12}{self.macs / 1e9:>10.3f}"
                     f"{self.attention_macs / 1e9:>12.3f}")
        return "\n".join(lines)


def flop_formulas() -> dict:
    """Formulas ``FlopCounterMode`` lacks: the in-place matrix products the inference paths accumulate
    residuals and attention logits with, and the CPU flash-attention kernels and swinkit's own (counted
    as the math path counts them)."""
    from torch.utils import flop_counter

    from swinkit.layers import native
    aten = torch.ops.aten

    def addmm_inplace(acc_shape, a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
        return 2 * a_shape[0] * a_shape[1] * b_shape[1]

    def baddbmm_inplace(acc_shape, a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
        return 2 * a_shape[0] * a_shape[1] * a_shape[2] * b_shape[2]

    mapping = {aten.addmm_: addmm_inplace, aten.baddbmm_: baddbmm_inplace}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        def forward(query, key, value, *args, out_shape=None, **kwargs) -> int:
            return flop_counter.sdpa_flop_count(query, key, value)

        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = forward
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        def backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
            return flop_counter.sdpa_backward_flop_count(grad_out, query, key, value)

        mapping[aten._scaled_dot_product_flash_attention_for_cpu_backward] = backward

    def window_attention(query, key, value, *args, out_shape=None, **kwargs) -> int:  # swinkit's CPU kernel
        return flop_counter.sdpa_flop_count(query, key, value)

    def linear(out, x_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:  # swinkit's CPU kernel
        return 2 * x_shape[0] * x_shape[1] * weight_shape[0]

    def window_attention_backward(grad_q, grad_k, grad_v, grad_out, query, key, *args, out_shape=None,
                                  **kwargs) -> int:  # swinkit's CPU kernel: the logits again, then four products
        windows, heads, tokens, head_dim = query
        return 5 * 2 * windows * heads * tokens * key[2] * head_dim

    mapping[native.OP] = window_attention
    mapping[native.BACKWARD_OP] = window_attention_backward
    mapping[native.LINEAR_OP] = linear
    return mapping


def _count(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return str(n)


def part_of(family: str, name: str) -> str:
    """Which row a module or parameter name (without the model prefix) belongs to.

    Swin / Video Swin: ``patch_embed`` -> stem; ``layers.i`` -> stage i+1; ``layers.i.downsample`` (patch
    merging) -> stage i+2, as the papers draw it; the rest (final norm, head) -> head. Shunted:
    ``patch_embed{s}``, ``block{s}``, ``norm{s}`` -> stage s; ``head`` -> head.
    """
    if family == "shunted":
        found = re.match(r"(patch_embed|block|norm)(\d+)(\.|$)", name)
        return f"stage{found[2]}" if found else "head"
    found = re.match(r"layers\.(\d+)\.downsample(\.|$)", name)
    if found:
        return f"stage{int(found[1]) + 2}"
    found = re.match(r"(layers|stage_norms)\.(\d+)(\.|$)", name)
    if found:
        return f"stage{int(found[2]) + 1}"
    if name.startswith(("patch_embed", "absolute_pos_embed", "pos_drop")):
        return "stem"
    return "head"


def _part_order(part: str) -> tuple[int, int]:
    if part == "stem":
        return (0, 0)
    if part.startswith("stage"):
        return (1, int(part[5:]))
    return (2, 0)


def _module_macs(counts: dict[str, dict], family: str) -> dict[str, tuple[int, int]]:
    """FlopCounterMode per-module counts -> part -> (MACs, attention MACs), each op counted once.

    Counts are inclusive of the modules called inside; a module is summed only when no enclosing module
    of the same part was counted (merging runs outside its owning stage's forward, so it is separate).
    """
    by_part: dict[str, dict[str, dict]] = {}
    for key, ops in counts.items():
        if "." not in key:  # "Global" and the model itself
            continue
        name = key.split(".", 1)[1]
        by_part.setdefault(part_of(family, name), {})[name] = ops
    totals = {}
    for part, modules in by_part.items():
        macs = attention = 0
        for name, ops in modules.items():
            parts = name.split(".")
            if any(".".join(parts[:i]) in modules for i in range(1, len(parts))):
                continue
            for op, flops in ops.items():
                macs += flops // 2
                if str(op).startswith(ATTENTION_OPS):
                    attention += flops // 2
        totals[part] = (macs, attention)
    return totals


def saved_activation_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct non-parameter storages a training forward saves for backward."""
    weights = {t.untyped_storage()._cdata for t in [*model.parameters(), *model.buffers()]}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage._cdata not in weights:
            storages[storage._cdata] = storage.nbytes()
        return tensor

    was_training = model.training
    model.train()
    try:
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            model(x)
    finally:
        model.train(was_training)
    return sum(storages.values())


def meta_model(model_or_name: nn.Module | str, **overrides) -> nn.Module:
    """A weightless copy of ``model`` (same class and config), or the registered model ``name`` built on meta."""
    with torch.device("meta"):
        if isinstance(model_or_name, str):
            return create_model(model_or_name, **overrides)
        if overrides:
            raise ValueError("overrides apply to a model name, not to a built model")
        return type(model_or_name)(model_or_name.config)


def model_info(model_or_name: nn.Module | str, input_shape: tuple[int, ...] | None = None, *,
               activations: bool = True, **overrides) -> ModelInfo:
    """Parameters, multiply-adds (total, attention, per part), activation memory and output shapes.

    ``input_shape`` (B, C, H, W) or (B, C, T, H, W) defaults to the papers' input (224², and 32 frames for
    video). A built model is described through a weightless copy of its class and config. The activation
    estimate (one more meta forward, in training mode) is skipped with ``activations=False``.
    """
    model = meta_model(model_or_name, **overrides).eval()
    name = model_or_name if isinstance(model_or_name, str) else type(model_or_name).__name__
    family = getattr(model, "family", "swin")
    shape = tuple(input_shape) if input_shape is not None else default_input_shape(model)
    if len(shape) != 2 + num_input_axes(model):
        raise ValueError(f"{name} takes {2 + num_input_axes(model)}-D inputs "
                         f"({'BxCxTxHxW' if num_input_axes(model) == 3 else 'BxCxHxW'}), got shape {shape}")
    x = torch.empty(shape, device="meta")

    counter = FlopCounterMode(display=False, custom_mapping=flop_formulas())
    with counter, torch.no_grad():
        logits = model(x)
    part_macs = _module_macs(counter.get_flop_counts(), family)
    total_macs = counter.get_total_flops() // 2
    attention_total = sum(a for _, a in part_macs.values())

    with torch.no_grad():
        stage_maps = model.forward_features(x, out_indices=list(range(len(model.feature_info))))
    shapes = {f"stage{i + 1}": tuple(m.shape) for i, m in enumerate(stage_maps)}
    shapes["head"] = tuple(logits.shape)

    part_params: dict[str, int] = {}
    for param_name, param in model.named_parameters():
        part = part_of(family, param_name)
        part_params[part] = part_params.get(part, 0) + param.numel()
    names = sorted(set(part_params) | set(part_macs), key=_part_order)
    parts = [PartInfo(p, part_params.get(p, 0), *part_macs.get(p, (0, 0)), shapes.get(p)) for p in names]
    counted = sum(p.macs for p in parts)
    if counted != total_macs:  # ops outside every named module (none in swinkit's models)
        parts.append(PartInfo("other", 0, total_macs - counted, 0, None))

    counted_params = model if isinstance(model_or_name, str) else model_or_name  # keeps frozen parameters
    return ModelInfo(
        name=name, family=family, input_shape=shape,
        params=sum(p.numel() for p in counted_params.parameters()),
        trainable_params=sum(p.numel() for p in counted_params.parameters() if p.requires_grad),
        macs=total_macs, attention_macs=attention_total,
        activation_bytes=saved_activation_bytes(model, x) if activations else None,
        output_shape=tuple(logits.shape), parts=tuple(parts))
