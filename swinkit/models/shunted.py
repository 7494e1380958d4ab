"""Shunted Transformer (Ren et al., CVPR 2022), numerically the official ``SSA.py`` on any input >= 32x32.

Tokens flow as (B, N, C) with N = H*W row-major over (h, w), exactly as in the official code. Convolutions
see the same memory as a channels-last (B, C, H, W) view, so no transpose copies are made between the
token and image layouts. State-dict keys are the official ones (``patch_embed1.conv.{k}``, ``block{s}.{j}.…``,
``norm{s}``, ``head``), so an official checkpoint's ``model`` dict loads with ``load_state_dict``.

Input sizes: the official code fails when a stage grid is smaller than a token-aggregation kernel
(``sr`` or ``sr/2``); there, and only there, swinkit zero-pads that grid bottom/right up to the kernel
(see ``docs/shunted.md``). Everywhere else the arithmetic is the official one, floors included.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from swinkit.layers import native
from swinkit.layers.checks import check_input, has_forward_hooks
from swinkit.layers.drop import DropPath, drop_path_rates
from swinkit.layers.init import init_linear_and_norm
from swinkit.layers.mlp import Mlp, gelu_into
from swinkit.layers.workspace import Workspace, linear, linear_add_, linear_into
from swinkit.models.registry import register_model

EMBED_NORM_EPS = 1e-5  # patch-embedding norms and the attention's token-aggregation norms (nn.LayerNorm default)
BLOCK_NORM_EPS = 1e-6  # block and stage norms (the official factories pass eps=1e-6)
MIN_INPUT_SIZE = 32

Grid = tuple[int, int]


@dataclass(frozen=True)
class ShuntedConfig:
    """Everything that defines a Shunted Transformer; field names are the official constructor's."""

    num_classes: int = 1000
    in_chans: int = 3
    embed_dims: tuple[int, ...] = (64, 128, 256, 512)
    depths: tuple[int, ...] = (1, 2, 4, 1)
    num_heads: tuple[int, ...] = (2, 4, 8, 16)
    mlp_ratios: tuple[float, ...] = (8, 8, 4, 4)
    sr_ratios: tuple[int, ...] = (8, 4, 2, 1)
    num_conv: int = 0
    qkv_bias: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0

    def __post_init__(self) -> None:
        per_stage = ("embed_dims", "depths", "num_heads", "mlp_ratios", "sr_ratios")
        for name in per_stage:
            value = getattr(self, name)
            if isinstance(value, (int, float)) or not hasattr(value, "__len__"):
                raise ValueError(f"ShuntedConfig.{name} must be a sequence with one entry per stage, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        num_stages = len(self.embed_dims)
        if num_stages == 0 or any(len(getattr(self, name)) != num_stages for name in per_stage):
            lengths = ", ".join(f"{name}={len(getattr(self, name))}" for name in per_stage)
            raise ValueError(f"ShuntedConfig needs the same number (>= 1) of stages in every per-stage field, "
                             f"got {lengths}")
        for stage, (dim, heads, sr) in enumerate(zip(self.embed_dims, self.num_heads, self.sr_ratios)):
            if dim < 1 or heads < 1 or dim % heads:
                raise ValueError(f"stage {stage}: embed_dim {dim} must be a positive multiple of num_heads {heads}")
            if sr < 1 or (sr > 1 and sr % 2):
                raise ValueError(f"stage {stage}: sr_ratio must be 1 or an even number (the fine branch uses sr/2), "
                                 f"got {sr}")
            if sr > 1 and heads % 2:
                raise ValueError(f"stage {stage}: sr_ratio {sr} > 1 splits the heads in two halves, so num_heads "
                                 f"must be even, got {heads}")
        if any(d < 0 for d in self.depths) or any(r <= 0 for r in self.mlp_ratios):
            raise ValueError(f"depths must be >= 0 and mlp_ratios > 0, got {self.depths} and {self.mlp_ratios}")
        if self.num_classes < 0 or self.in_chans < 1 or self.num_conv < 0:
            raise ValueError(f"num_classes >= 0, in_chans >= 1 and num_conv >= 0 expected, got "
                             f"{self.num_classes}, {self.in_chans}, {self.num_conv}")
        for name in ("drop_rate", "attn_drop_rate", "drop_path_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")


def tokens_to_map(tokens: torch.Tensor, grid: Grid) -> torch.Tensor:
    """(B, H*W, C) tokens -> (B, C, H, W) view (channels-last strides; no copy)."""
    batch, _, channels = tokens.shape
    return tokens.view(batch, grid[0], grid[1], channels).permute(0, 3, 1, 2)


def map_to_tokens(feature_map: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C) tokens; free for channels-last maps, one copy otherwise."""
    batch, channels, height, width = feature_map.shape
    return feature_map.permute(0, 2, 3, 1).reshape(batch, height * width, channels)


def conv_on_tokens(conv: nn.Conv2d, tokens: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Apply a same-size ``conv`` to (B, H*W, C) tokens laid out on ``grid``; returns (B, H*W, C')."""
    return map_to_tokens(conv(tokens_to_map(tokens, grid)))


def depthwise_residual(conv: nn.Conv2d, tokens: torch.Tensor, grid: Grid, out: torch.Tensor | None = None,
                       gelu: bool = False) -> torch.Tensor:
    """``tokens + conv(tokens)`` for a depthwise 3x3 ``conv`` on (B, H*W, C) tokens laid out on ``grid``, through
    the exact GELU with ``gelu``: one pass of swinkit's kernel, into ``out`` (B, H*W, C) when given, where it
    applies (inference, fp32 CPU, C a multiple of 8, no hook on ``conv``: 1.5-2x PyTorch's convolution, addition
    and GELU); else those three."""
    if tokens.is_contiguous() and (out is None or out.is_contiguous()) and not has_forward_hooks(conv):
        as_map = (tokens.shape[0], grid[0], grid[1], tokens.shape[2])
        target = torch.empty_like(tokens) if out is None else out
        if native.depthwise_applies(target.view(as_map), tokens.view(as_map), conv.weight, conv.bias):
            native.depthwise_conv3x3_(target.view(as_map), tokens.view(as_map), conv.weight, conv.bias,
                                      residual=True, gelu=gelu)
            return target
    mixed = conv_on_tokens(conv, tokens, grid).add_(tokens)
    return gelu_into(mixed, mixed) if gelu else mixed


def patch_linear(tokens: torch.Tensor, grid: Grid, conv: nn.Conv2d) -> tuple[torch.Tensor, Grid]:
    """A stride == kernel convolution (no padding) on (B, H*W, C) tokens, run as one matrix product over
    non-overlapping k x k patches: ((B, H'*W', C'), (H', W')), H' = H // k. Grids smaller than the
    kernel are zero-padded bottom/right first. Same sums as the conv (faster in eager mode: no conv kernel
    on tiny maps); traced graphs (compile, export) keep the conv, whose output sizes stay symbolic."""
    kernel = conv.kernel_size[0]
    if kernel == 1:
        return linear(tokens, conv.weight.flatten(1), conv.bias), grid
    pad = (0, max(kernel - grid[1], 0), 0, max(kernel - grid[0], 0))  # on (W, H)
    if torch.compiler.is_compiling():
        feature_map = tokens_to_map(tokens, grid)
        reduced = conv(F.pad(feature_map, pad) if any(pad) else feature_map)
        return map_to_tokens(reduced), (reduced.shape[2], reduced.shape[3])
    batch, _, channels = tokens.shape
    feature_map = tokens.view(batch, grid[0], grid[1], channels)
    if any(pad):
        feature_map = F.pad(feature_map, (0, 0, *pad))
    rows, cols = feature_map.shape[1] // kernel, feature_map.shape[2] // kernel
    patches = feature_map[:, :rows * kernel, :cols * kernel].reshape(batch, rows, kernel, cols, kernel, channels)
    patches = patches.transpose(2, 3).reshape(batch, rows * cols, kernel * kernel * channels)
    weight = conv.weight.permute(0, 2, 3, 1).reshape(conv.out_channels, -1)  # (C', k, k, C) like the patches
    return linear(patches, weight, conv.bias), (rows, cols)


def split_linear(x: torch.Tensor, layer: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    """``layer(x).chunk(2, -1)`` as two products, so each half is contiguous (the depth-wise conv on v
    then reads it without a copy)."""
    half = layer.out_features // 2
    bias = layer.bias
    return (linear(x, layer.weight[:half], None if bias is None else bias[:half]),
            linear(x, layer.weight[half:], None if bias is None else bias[half:]))


def conv_with_folded_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """bn(conv(x)) for a BatchNorm in eval mode, as one convolution: W' = W * s, b' = (b - mean) * s + beta
    with s = gamma / sqrt(var + eps). Equal up to float rounding, differentiable in every parameter."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    bias = -bn.running_mean * scale if conv.bias is None else (conv.bias - bn.running_mean) * scale
    if bn.bias is not None:
        bias = bias + bn.bias
    return conv._conv_forward(x, conv.weight * scale.view(-1, 1, 1, 1).to(conv.weight.dtype), bias.to(x.dtype))


def embed_tokens(conv: Callable[[torch.Tensor], torch.Tensor], norm: nn.LayerNorm,
                 x: torch.Tensor) -> tuple[torch.Tensor, Grid]:
    """Convolutional embedding then LayerNorm: (B, C, H, W) -> ((B, H'*W', C'), (H', W'))."""
    feature_map = conv(x)
    return norm(map_to_tokens(feature_map)), (feature_map.shape[2], feature_map.shape[3])


class ShuntedStem(nn.Module):
    """Stage-1 embedding (official ``Head``): (B, in_chans, H, W) -> (B, H1*W1, C), H1 = floor(ceil(H/2)/2).

    Conv7x7/2 (no bias) -> BN -> ReLU, ``num_conv`` x [Conv3x3 (no bias) -> BN -> ReLU], Conv2x2/2 (bias),
    LayerNorm (eps 1e-5). ``conv`` is one ``nn.Sequential`` so the official indices ``conv.{k}`` hold.
    """

    def __init__(self, in_chans: int, dim: int, num_conv: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_chans, dim, 7, stride=2, padding=3, bias=False),
                                   nn.BatchNorm2d(dim), nn.ReLU(inplace=True)]
        for _ in range(num_conv):
            layers += [nn.Conv2d(dim, dim, 3, padding=1, bias=False), nn.BatchNorm2d(dim), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(dim, dim, 2, stride=2))
        self.conv = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(dim, eps=EMBED_NORM_EPS)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Grid]:
        # channels-last input: faster convolutions here, and the output is already token-major for the norm
        return embed_tokens(self._convolve, self.norm, x.contiguous(memory_format=torch.channels_last))

    def _convolve(self, x: torch.Tensor) -> torch.Tensor:
        """``self.conv(x)``; each Conv -> BatchNorm pair whose BN uses running statistics (eval) runs as one
        convolution with the BN folded into its weights (no full-size normalisation pass) unless hooked."""
        layers = list(self.conv)
        i = 0
        while i < len(layers):
            layer = layers[i]
            following = layers[i + 1] if i + 1 < len(layers) else None
            if (isinstance(following, nn.BatchNorm2d) and not following.training
                    and following.running_var is not None
                    and not (has_forward_hooks(layer) or has_forward_hooks(following))):
                x = conv_with_folded_bn(layer, following, x)
                i += 2
            else:
                x = layer(x)
                i += 1
        return x


class OverlapPatchEmbed(nn.Module):
    """Stages 2+ embedding: Conv3x3/2 pad 1 -> LayerNorm (eps 1e-5); (B, C, H, W) -> (B, H'*W', C'),
    H' = floor((H - 1) / 2) + 1."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_dim, dim, 3, stride=2, padding=1)
        self.norm = nn.LayerNorm(dim, eps=EMBED_NORM_EPS)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Grid]:
        return embed_tokens(self.proj, self.norm, x)


def depthwise_conv3x3(channels: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, padding=1, groups=channels)


class DWConv(nn.Module):
    """Depthwise 3x3 convolution on (B, H*W, C) tokens (holds ``dwconv`` for the official key name)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = depthwise_conv3x3(dim)

    def forward(self, tokens: torch.Tensor, grid: Grid) -> torch.Tensor:
        return conv_on_tokens(self.dwconv, tokens, grid)


class ShuntedMlp(Mlp):
    """Mlp whose activation sees the depthwise-conv residual: fc1 -> GELU(h + DWConv(h)) -> dropout -> fc2 ->
    dropout on (B, N, C) tokens."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__(dim, hidden_dim, drop)
        self.dwconv = DWConv(hidden_dim)

    def forward(self, x: torch.Tensor, grid: Grid, add_to: torch.Tensor | None = None,
                workspace: Workspace | None = None) -> torch.Tensor:
        """x (B, N, C) -> (B, N, C_out). Inference only, with ``add_to`` (B, N, C_out) and a ``workspace``:
        the result is accumulated into ``add_to`` by fc2's matrix product (fc1's output in the workspace)
        and ``add_to`` is returned."""
        batch, num_tokens, channels = x.shape
        accumulate = add_to is not None and workspace is not None
        if not accumulate:
            hidden = self.fc1(x)
            mixed = self.dwconv(hidden, grid).add_(hidden)
            del hidden
            return self.drop(self.fc2(self.drop(self.activate(mixed))))
        hidden_shape = (batch * num_tokens, self.fc1.out_features)
        hidden = linear_into(workspace.take("hidden", hidden_shape, x), x.reshape(-1, channels),
                             self.fc1).view(batch, num_tokens, -1)
        if self.exact_gelu() and not (has_forward_hooks(self.dwconv) or has_forward_hooks(self.act)):
            # GELU(h + DWConv(h)) in one pass where the kernel applies
            activated = depthwise_residual(self.dwconv.dwconv, hidden, grid,
                                           workspace.take("mixed", hidden_shape, x).view(hidden.shape), gelu=True)
        else:
            activated = self.activate(self.dwconv(hidden, grid).add_(hidden))
        del hidden
        return linear_add_(add_to.view(-1, add_to.shape[-1]), activated.reshape(batch * num_tokens, -1),
                           self.fc2).view(add_to.shape)


class ShuntedAttention(nn.Module):
    """Shunted self-attention on (B, N, C) tokens laid out on an (H, W) grid.

    sr_ratio > 1: heads [0, nH/2) attend to keys/values aggregated by an sr x sr strided conv, heads
    [nH/2, nH) to an (sr/2) x (sr/2) one (each conv -> LayerNorm eps 1e-5 -> GELU -> Linear(C, C) giving
    k and v of C/2 each); v is enhanced by a depthwise 3x3 conv before use. sr_ratio == 1: plain attention
    whose output gets a depthwise 3x3 conv of v added. Logits are (q k^T) * hd^-0.5.
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.sr_ratio = sr_ratio
        self.scale = (dim // num_heads) ** -0.5
        self.attn_drop = attn_drop
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        if sr_ratio > 1:
            self.sr1 = nn.Conv2d(dim, dim, sr_ratio, stride=sr_ratio)
            self.norm1 = nn.LayerNorm(dim, eps=EMBED_NORM_EPS)
            self.sr2 = nn.Conv2d(dim, dim, sr_ratio // 2, stride=sr_ratio // 2)
            self.norm2 = nn.LayerNorm(dim, eps=EMBED_NORM_EPS)
            self.kv1 = nn.Linear(dim, dim, bias=qkv_bias)
            self.kv2 = nn.Linear(dim, dim, bias=qkv_bias)
            self.local_conv1 = depthwise_conv3x3(dim // 2)
            self.local_conv2 = depthwise_conv3x3(dim // 2)
        else:
            self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
            self.local_conv = depthwise_conv3x3(dim)

    def _attend(self, q: torch.Tensor, k_tokens: torch.Tensor, v_tokens: torch.Tensor) -> torch.Tensor:
        """q (B, h, N, hd), k/v tokens (B, M, h*hd) -> (B, N, h*hd)."""
        batch, heads, num_tokens, head_dim = q.shape
        k = k_tokens.unflatten(-1, (heads, head_dim)).transpose(1, 2)
        v = v_tokens.unflatten(-1, (heads, head_dim)).transpose(1, 2)
        dropout = self.attn_drop if self.training else 0.0
        if dropout == 0.0 and native.applies(q, k, v):  # swinkit's CPU kernel: (B, N, h, hd), no transpose copy
            return native.window_attention(q, k, v, None, self.scale).view(batch, num_tokens, heads * head_dim)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=self.scale)
        return out.transpose(1, 2).reshape(batch, num_tokens, heads * head_dim)

    def _aggregated_branch(self, q: torch.Tensor, x: torch.Tensor, grid: Grid, reduce: nn.Conv2d,
                           norm: nn.LayerNorm, kv: nn.Linear, local_conv: nn.Conv2d) -> torch.Tensor:
        """One half of the heads, q (B, nH/2, N, hd), attending to the tokens x (B, N, C) on ``grid``
        aggregated by the strided conv ``reduce``."""
        reduced, grid = patch_linear(x, grid, reduce)
        k_tokens, v_tokens = split_linear(F.gelu(norm(reduced)), kv)
        v_tokens = depthwise_residual(local_conv, v_tokens, grid)
        return self._attend(q, k_tokens, v_tokens)

    def forward(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        """(B, H*W, C) -> (B, H*W, C)."""
        batch, num_tokens, dim = x.shape
        q = linear(x, self.q.weight, self.q.bias)
        q = q.view(batch, num_tokens, self.num_heads, dim // self.num_heads).transpose(1, 2)
        if self.sr_ratio > 1:
            half = self.num_heads // 2
            out = torch.cat([
                self._aggregated_branch(q[:, :half], x, grid, self.sr1, self.norm1, self.kv1, self.local_conv1),
                self._aggregated_branch(q[:, half:], x, grid, self.sr2, self.norm2, self.kv2, self.local_conv2),
            ], dim=-1)
        else:
            k_tokens, v_tokens = split_linear(x, self.kv)
            # out of place: the attention kernel keeps its output for the backward pass
            out = self._attend(q, k_tokens, v_tokens) + conv_on_tokens(self.local_conv, v_tokens, grid)
        return self.proj_drop(linear(out, self.proj.weight, self.proj.bias))


class ShuntedBlock(nn.Module):
    """x + DropPath(Attn(LN(x))), then x + DropPath(Mlp(LN(x))), LN eps 1e-6; (B, N, C) -> (B, N, C)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, sr_ratio: int, qkv_bias: bool = True,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=BLOCK_NORM_EPS)
        self.attn = ShuntedAttention(dim, num_heads, sr_ratio, qkv_bias, attn_drop, drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=BLOCK_NORM_EPS)
        self.mlp = ShuntedMlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), grid))
        return x + self.drop_path(self.mlp(self.norm2(x), grid))

    def forward_inplace(self, x: torch.Tensor, grid: Grid, workspace: Workspace) -> torch.Tensor:
        """Inference only (eval, autograd off): the same block adding both residuals into ``x`` (B, N, C),
        a few samples at a time so that every temporary stays small and is reused."""
        samples = max(1, INPLACE_CHUNK_ELEMENTS // (x.shape[1] * self.mlp.fc1.out_features))
        for start in range(0, x.shape[0], samples):
            part = x[start:start + samples]
            part += self.attn(self.norm1(part), grid)
            self.mlp(self.norm2(part), grid, add_to=part, workspace=workspace)
        return x


INPLACE_CHUNK_ELEMENTS = 3136 * 512  # MLP hidden elements per group in ShuntedBlock.forward_inplace


@torch.no_grad()
def init_weights(module: nn.Module) -> None:
    """The official initialisation: Linear / LayerNorm as :func:`init_linear_and_norm`,
    Conv normal(0, sqrt(2 / fan_out)) with fan_out = kh * kw * out_channels / groups and zero bias."""
    init_linear_and_norm(module)
    if isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class ShuntedTransformer(nn.Module):
    """Shunted Transformer classifier/backbone; input (B, in_chans, H, W) with H, W >= 32, output (B, num_classes)."""

    family = "shunted"

    def __init__(self, config: ShuntedConfig):
        super().__init__()
        self.config = config
        self.num_stages = len(config.embed_dims)
        self.num_classes = config.num_classes
        self.num_features = config.embed_dims[-1]
        self.grad_checkpointing = False
        self.workspace = Workspace()  # inference scratch buffers (forward_inplace)
        rates = drop_path_rates(config.drop_path_rate, config.depths)
        for stage, dim in enumerate(config.embed_dims):
            if stage == 0:
                embed: nn.Module = ShuntedStem(config.in_chans, dim, config.num_conv)
            else:
                embed = OverlapPatchEmbed(config.embed_dims[stage - 1], dim)
            blocks = nn.ModuleList(
                ShuntedBlock(dim, config.num_heads[stage], config.mlp_ratios[stage], config.sr_ratios[stage],
                             config.qkv_bias, config.drop_rate, config.attn_drop_rate, rate)
                for rate in rates[stage])
            setattr(self, f"patch_embed{stage + 1}", embed)
            setattr(self, f"block{stage + 1}", blocks)
            setattr(self, f"norm{stage + 1}", nn.LayerNorm(dim, eps=BLOCK_NORM_EPS))
        self.head = self._new_head(config.num_classes)
        self.feature_info = [dict(num_chs=dim, reduction=4 * 2 ** stage, module=f"norm{stage + 1}")
                             for stage, dim in enumerate(config.embed_dims)]
        self.apply(init_weights)
        # convolution weights in channels-last order like the feature maps they see: the convolutions do
        # not reorder them on every call (Shunted-T forward: 1.04-1.08x at batch 1, in-process A/B)
        self.to(memory_format=torch.channels_last)

    def _new_head(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def train(self, mode: bool = True) -> "ShuntedTransformer":
        if mode:
            self.workspace.clear()  # scratch buffers are for inference only
        return super().train(mode)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward pass (saves memory, same gradients)."""
        self.grad_checkpointing = enable

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head by a freshly initialised Linear(num_features, num_classes) (Identity for 0)."""
        self.head = self._new_head(num_classes)
        self.head.apply(init_weights)
        self.num_classes = num_classes
        self.config = dataclasses.replace(self.config, num_classes=num_classes)

    def _stage_indices(self, out_indices: int | list[int] | tuple[int, ...] | None) -> list[int]:
        if out_indices is None:
            return [self.num_stages - 1]
        indices = [out_indices] if isinstance(out_indices, int) else list(out_indices)
        if not indices or any(not -self.num_stages <= i < self.num_stages for i in indices):
            raise ValueError(f"out_indices must be stage indices in [-{self.num_stages}, {self.num_stages}), "
                             f"got {out_indices!r}")
        return [i % self.num_stages for i in indices]

    def _run_block(self, block: ShuntedBlock, tokens: torch.Tensor, grid: Grid, inplace: bool) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, tokens, grid, use_reentrant=False)
        return block.forward_inplace(tokens, grid, self.workspace) if inplace else block(tokens, grid)

    def _inplace_allowed(self) -> bool:
        """Blocks may overwrite the tokens of forward_features (made there by a patch embedding) in eager
        inference when no hook could be holding or expecting a whole-batch tensor."""
        return not (self.training or torch.is_grad_enabled() or torch.compiler.is_compiling()
                    or has_forward_hooks(self))

    def forward_features(self, x: torch.Tensor,
                         out_indices: int | list[int] | tuple[int, ...] | None = None) -> list[torch.Tensor]:
        """(B, in_chans, H, W) -> stage maps (B, C_i, H_i, W_i) after ``norm{i+1}``, for ``out_indices``
        (default: the last stage only). Stages after the last requested one are not run."""
        check_input(x, num_spatial_dims=2, in_chans=self.config.in_chans,
                    min_size=(MIN_INPUT_SIZE, MIN_INPUT_SIZE), model_name="Shunted Transformer")
        indices = self._stage_indices(out_indices)
        stage_maps = {}
        inplace = self._inplace_allowed()
        for stage in range(max(indices) + 1):
            tokens, grid = getattr(self, f"patch_embed{stage + 1}")(x)
            for block in getattr(self, f"block{stage + 1}"):
                tokens = self._run_block(block, tokens, grid, inplace)
            x = tokens_to_map(getattr(self, f"norm{stage + 1}")(tokens), grid)
            if stage in indices:
                stage_maps[stage] = x
        return [stage_maps[i] for i in indices]

    def forward_head(self, features: torch.Tensor | list[torch.Tensor] | tuple[torch.Tensor, ...],
                     pre_logits: bool = False) -> torch.Tensor:
        """Mean-pool the last stage map (B, C, H, W) (or the last of a list of maps) -> (B, C) -> head."""
        if isinstance(features, (list, tuple)):
            if not features:
                raise ValueError("forward_head got an empty list of feature maps")
            features = features[-1]
        if not isinstance(features, torch.Tensor) or features.ndim != 4 or features.shape[1] != self.num_features:
            shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
            raise ValueError(f"forward_head expects the last stage map (B, {self.num_features}, H, W), got {shape}")
        pooled = features.mean(dim=(2, 3))
        return pooled if pre_logits else self.head(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> logits (B, num_classes)."""
        return self.forward_head(self.forward_features(x))


def build_shunted(variant_defaults: dict, overrides: dict) -> ShuntedTransformer:
    """A ShuntedTransformer from a variant's defaults updated by official-name ``overrides``."""
    known = {field.name for field in dataclasses.fields(ShuntedConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown Shunted Transformer argument(s) {', '.join(unknown)}; "
                         f"expected some of {', '.join(sorted(known))}")
    return ShuntedTransformer(ShuntedConfig(**{**variant_defaults, **overrides}))


@register_model
def shunted_t(**overrides) -> ShuntedTransformer:
    """Shunted-T: depths 1,2,4,1, plain stem; 11.55M parameters, 2.15 GMACs at 224."""
    return build_shunted(dict(depths=(1, 2, 4, 1), num_conv=0, drop_path_rate=0.1), overrides)


@register_model
def shunted_s(**overrides) -> ShuntedTransformer:
    """Shunted-S: depths 2,4,12,1, one extra stem conv; 22.40M parameters, 4.99 GMACs at 224."""
    return build_shunted(dict(depths=(2, 4, 12, 1), num_conv=1, drop_path_rate=0.2), overrides)


@register_model
def shunted_b(**overrides) -> ShuntedTransformer:
    """Shunted-B: depths 3,4,24,2, two extra stem convs; 39.61M parameters, 8.15 GMACs at 224."""
    return build_shunted(dict(depths=(3, 4, 24, 2), num_conv=2, drop_path_rate=0.3), overrides)
