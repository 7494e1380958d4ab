"""Swin Transformer (2D) and Video Swin Transformer (3D): one N-D implementation.

An image model has 2 window axes (H, W), a video model 3 (T, H, W). Tokens stay channels-last,
(B, *grid, C), between modules; stage maps returned to users are channels-first.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

from swinkit.layers.checks import check_input, has_forward_hooks
from swinkit.layers.compat import CompatRules, check_compat, clamp_window, compat_rules
from swinkit.layers.drop import DropPath, drop_path_rates
from swinkit.layers.init import init_linear_and_norm
from swinkit.layers.merging import PatchMerging
from swinkit.layers.mlp import Mlp
from swinkit.layers.patch_embed import PatchEmbed
from swinkit.layers.recompute import autocast_dtype, autocast_enabled, norm_mlp
from swinkit.layers.window_attention import WindowAttention, window_groups, windows_of, windows_per_sample
from swinkit.layers.workspace import Workspace, linear_add_, norm_linear_into
from swinkit.layers.windows import (gather_tokens, layout_change, padded_size, shifted_window_mask,
                                    window_partition, window_reverse)
from swinkit.models.registry import register_model


def _tuple(value, ndim: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * ndim
    value = tuple(int(v) for v in value)
    if len(value) != ndim:
        raise ValueError(f"expected {ndim} values, got {value}")
    return value


@dataclass(frozen=True)
class SwinConfig:
    """Everything that defines a Swin / Video Swin model. ``patch_size`` fixes the number of axes."""

    patch_size: tuple[int, ...] = (4, 4)
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: tuple[int, ...] = (7, 7)
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    patch_norm: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    head_drop_rate: float | None = None  # None: drop_rate (image) / 0.5 (video, I3D head)
    img_size: tuple[int, ...] | None = None  # only for absolute position embeddings and MS/timm tables
    ape: bool = False
    norm_stages: tuple[int, ...] = ()  # stages normalised besides the last (mmaction2 1.x out_indices)
    compat: str | None = None

    @property
    def ndim(self) -> int:
        return len(self.patch_size)

    @property
    def num_features(self) -> int:
        return self.embed_dim * 2 ** (len(self.depths) - 1)

    @classmethod
    def build(cls, **kwargs) -> "SwinConfig":
        """Validate and normalise keyword arguments (official names) into a config."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise ValueError(f"unknown Swin argument(s) {unknown}; expected some of {sorted(names)}")
        ndim = _num_axes(kwargs)
        kw = dict(kwargs)
        kw["patch_size"] = _tuple(kw.get("patch_size", cls.patch_size), ndim)
        kw["window_size"] = _tuple(kw.get("window_size", (7,) * ndim), ndim)
        kw["depths"] = tuple(int(d) for d in kw.get("depths", cls.depths))
        kw["num_heads"] = tuple(int(h) for h in kw.get("num_heads", cls.num_heads))
        kw["norm_stages"] = tuple(int(i) for i in kw.get("norm_stages", ()))
        if kw.get("img_size") is not None:
            kw["img_size"] = _tuple(kw["img_size"], ndim)
        check_compat(kw.get("compat"))
        config = cls(**kw)
        if len(config.depths) != len(config.num_heads):
            raise ValueError(f"depths {config.depths} and num_heads {config.num_heads} must have the same length")
        if config.ndim not in (2, 3):
            raise ValueError(f"patch_size must have 2 (image) or 3 (video) entries, got {config.patch_size}")
        if config.ape and (config.img_size is None or config.ndim != 2):
            raise ValueError("ape=True needs a 2D model with img_size")
        return config


def _num_axes(kwargs: dict) -> int:
    """2 for images, 3 for videos: taken from the first tuple among patch, window and image size."""
    for key in ("patch_size", "window_size", "img_size"):
        value = kwargs.get(key)
        if value is not None and not isinstance(value, int):
            return len(value)
    return 2


class SwinBlock(nn.Module):
    """Pre-norm block: x + DropPath(W-MSA/SW-MSA(LN(x))), then x + DropPath(MLP(LN(x))). x (B, *grid, C)."""

    def __init__(self, dim: int, num_heads: int, table_window: tuple[int, ...], rules: CompatRules,
                 mlp_ratio: float, qkv_bias: bool, drop: float, attn_drop: float, drop_path: float,
                 keep_mlp_hidden: bool = True):
        super().__init__()
        self.rules = rules
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, table_window, qkv_bias, attn_drop, drop,
                                    sliced_index=rules.sliced_bias_index)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.keep_mlp_hidden = keep_mlp_hidden  # training: keep the fc1 output for backward (False: compute it again)

    def forward(self, x: torch.Tensor, window: tuple[int, ...], shift: tuple[int, ...],
                shift_mask: torch.Tensor | None) -> torch.Tensor:
        grid = tuple(x.shape[1:-1])
        padded = padded_size(grid, window)
        axes = tuple(range(1, 1 + len(grid)))
        pad = []
        for g, p in zip(reversed(grid), reversed(padded)):
            pad += [0, p - g]
        pad = [0, 0] + pad
        shifted = any(shift)

        h = self.norm1(x)
        if self.rules.roll_before_pad:
            if shifted:
                h = torch.roll(h, [-s for s in shift], axes)
            h = F.pad(h, pad) if padded != grid else h
        else:
            h = F.pad(h, pad) if padded != grid else h
            if shifted:
                h = torch.roll(h, [-s for s in shift], axes)

        attn_bias = self.attn.attention_bias(window, shift_mask if shifted else None, h.dtype)
        h = window_reverse(self.attn(window_partition(h, window), attn_bias), window, padded)

        crop = (slice(None),) + tuple(slice(0, g) for g in grid)
        if self.rules.roll_before_pad:
            h = h[crop]
            if shifted:
                h = torch.roll(h, list(shift), axes)
        else:
            if shifted:
                h = torch.roll(h, list(shift), axes)
            h = h[crop]
        x = x + self.drop_path(h)
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def forward_windows(self, x: torch.Tensor, attn_bias: torch.Tensor, tokens: int,
                        workspace: Workspace | None = None, in_place: bool = False) -> torch.Tensor:
        """The same block on tokens already in its window order: x (B, L, C) -> (B, L, C).

        ``x`` holds whole windows of ``tokens`` tokens each (no padding), in the order that
        partitioning the rolled grid gives; LayerNorm, MLP and residuals are per token, so only
        attention sees the windows. Large temporaries go to ``workspace`` when one is given. With
        ``in_place`` (eval, autograd off, a workspace) the residuals are added into ``x`` a group of
        windows at a time and the output is ``x`` itself.
        """
        batch, length, channels = x.shape
        if in_place:
            rows = x.view(batch * length, channels)
            limit = rows.shape[0]
            if x.device.type == "cpu":
                limit = max(tokens, CHUNK_ELEMENTS // self.mlp.fc1.out_features)
            groups = window_groups(batch * (length // tokens), windows_per_sample(attn_bias), limit // tokens)
            for first, last, windows in groups:
                self._infer_rows(rows[first * tokens:last * tokens], windows_of(attn_bias, windows), tokens, workspace)
            return x
        h = self.attn.attend(x.view(batch * (length // tokens), tokens, channels), attn_bias, self.norm1, workspace)
        x = x + self.drop_path(h.view(batch, length, channels))
        return x + self.drop_path(norm_mlp(self.norm2, self.mlp, x, workspace, self.keep_mlp_hidden))

    def _infer_rows(self, rows: torch.Tensor, attn_bias: torch.Tensor, tokens: int, workspace: Workspace) -> None:
        """Inference on rows (n, C) holding whole windows: both residuals are added into ``rows``."""
        count, channels = rows.shape
        # the LayerNorms applied by the products as they read the rows (see norm_linear_into)
        qkv = norm_linear_into(workspace.take("qkv", (count, 3 * channels), rows), rows, self.norm1, self.attn.qkv)
        attended = self.attn.attend_qkv(qkv.view(-1, tokens, 3 * channels), attn_bias, workspace)
        linear_add_(rows, attended.view(count, channels), self.attn.proj)
        del attended
        hidden = workspace.take("hidden", (count, self.mlp.fc1.out_features), rows)
        linear_add_(rows, self.mlp.hidden_into(hidden, rows, self.norm2), self.mlp.fc2)


CHUNK_ELEMENTS = 4096 * 384  # MLP hidden elements per group of windows in inference (Swin-T stage 1: 4096 tokens)


class SwinStage(nn.Module):
    """``depth`` blocks alternating W-MSA and SW-MSA; the window plan and mask are made once per call."""

    def __init__(self, dim: int, depth: int, num_heads: int, window: tuple[int, ...], table_window: tuple[int, ...],
                 rules: CompatRules, mlp_ratio: float, qkv_bias: bool, drop: float, attn_drop: float,
                 drop_paths: list[float], keep_mlp_hidden: bool = True):
        super().__init__()
        self.window = tuple(window)  # window this stage is configured with (before clamping to a grid)
        self.rules = rules
        self.grad_checkpointing = False
        self.workspace = Workspace()  # scratch buffers; SwinTransformer gives all its stages one
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, table_window, rules, mlp_ratio, qkv_bias, drop, attn_drop, drop_paths[j],
                      keep_mlp_hidden)
            for j in range(depth))

    def train(self, mode: bool = True) -> "SwinStage":
        if mode != self.training:
            self.workspace.clear()  # inference and training use different scratch buffers
        return super().train(mode)

    def window_plan(self, grid: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(window, shift) of the shifted blocks on this grid; unshifted blocks use shift 0."""
        return clamp_window(grid, self.window, tuple(w // 2 for w in self.window), self.rules.clamp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, *grid, C) -> (B, *grid, C)."""
        grid = tuple(x.shape[1:-1])
        window, shift = self.window_plan(grid)
        no_shift = (0,) * len(grid)
        padded = padded_size(grid, window)
        mask = None
        if any(shift):
            mask = shifted_window_mask(padded, window, shift, x.device, x.dtype)
        if padded == grid and self._windowed_path_allowed():
            return self._forward_windowed(x, grid, window, shift, mask)
        for j, block in enumerate(self.blocks):
            block_shift = shift if j % 2 else no_shift
            block_mask = mask if j % 2 else None
            if self._checkpointing():
                x = torch.utils.checkpoint.checkpoint(block, x, window, block_shift, block_mask, use_reentrant=False)
            else:
                x = block(x, window, block_shift, block_mask)
        return x

    def _windowed_path_allowed(self) -> bool:
        """The token-reordering path runs in eager mode when no block has hooks (which expect
        grid-ordered tensors); compiled graphs take the roll / partition path, which inductor fuses."""
        return not (torch.compiler.is_compiling()
                    or any(has_forward_hooks(block, recurse=False) for block in self.blocks))

    def _checkpointing(self) -> bool:
        return self.grad_checkpointing and self.training and torch.is_grad_enabled()

    def _forward_windowed(self, x: torch.Tensor, grid: tuple[int, ...], window: tuple[int, ...],
                          shift: tuple[int, ...], mask: torch.Tensor | None) -> torch.Tensor:
        """Unpadded grids: tokens move into each block's window order once, with one gather
        between blocks (not a roll, partition, reverse and roll per block)."""
        batch, channels = x.shape[0], x.shape[-1]
        tokens = math.prod(window)
        # the workspace path: eval (stochastic depth needs whole samples), autograd off, no autocast
        inference = not (torch.is_grad_enabled() or self.training or autocast_enabled(x))
        bias_dtype = autocast_dtype(x)
        h = x.reshape(batch, -1, channels)
        layout, owned = None, False  # None: row-major grid order; owned: h is not the caller's tensor
        scratch = 0  # inference: tokens are reordered into two workspace buffers in turn; 0 = h is in neither
        for j, block in enumerate(self.blocks):
            shifted = bool(j % 2) and mask is not None
            block_layout = (window, shift if shifted else (0,) * len(grid), self.rules.roll_before_pad)
            index = layout_change(grid, layout, block_layout, x.device)
            if index is not None:
                out = None
                if inference:
                    scratch = scratch % 2 + 1
                    out = self.workspace.take(f"tokens{scratch}", tuple(h.shape), h)
                h, owned = gather_tokens(h, index, out), True
            elif inference and not owned:  # already in window order (one window per map): work on a copy in place
                scratch = scratch % 2 + 1
                h, owned = self.workspace.take(f"tokens{scratch}", tuple(h.shape), h).copy_(h), True
            layout = block_layout
            attn_bias = block.attn.attention_bias(window, mask if shifted else None, bias_dtype)
            if self._checkpointing():
                h = torch.utils.checkpoint.checkpoint(block.forward_windows, h, attn_bias, tokens, self.workspace,
                                                      use_reentrant=False)
            else:
                h = block.forward_windows(h, attn_bias, tokens, self.workspace, in_place=inference and owned)
            owned = True
        index = layout_change(grid, layout, None, x.device)
        if index is None and scratch:
            return h.clone().view(batch, *grid, channels)  # the stage output must not be a workspace buffer
        return gather_tokens(h, index).view(batch, *grid, channels)


class ClassifierHead(nn.Module):
    """Mean over all token axes -> Dropout -> Linear ``fc``. Input (B, C, *grid) -> (B, classes)."""

    def __init__(self, in_features: int, num_classes: int, drop: float):
        super().__init__()
        self.drop = nn.Dropout(drop)
        self.fc = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(x.mean(dim=tuple(range(2, x.ndim))))
        return x if pre_logits else self.fc(x)


class SwinTransformer(nn.Module):
    """Swin (2D, input (B, C, H, W)) or Video Swin (3D, input (B, C, T, H, W)) from a :class:`SwinConfig`."""

    def __init__(self, config: SwinConfig):
        super().__init__()
        self.config = config
        self.family = "video_swin" if config.ndim == 3 else "swin"
        self.rules = compat_rules(config.compat, config.ndim)
        ndim, num_stages = config.ndim, len(config.depths)
        self.num_classes = config.num_classes
        self.num_features = config.num_features
        self.patch_embed = PatchEmbed(config.patch_size, config.in_chans, config.embed_dim, config.patch_norm,
                                      floor=self.rules.floor_patch)
        self.absolute_pos_embed = None
        if config.ape:
            grid = self.patch_embed.output_grid(config.img_size)
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, math.prod(grid), config.embed_dim))
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(config.drop_rate)

        drop_paths = drop_path_rates(config.drop_path_rate, config.depths)
        stage_grids = self._stage_grids(config.img_size)
        self.layers = nn.ModuleList()
        self.feature_info = []
        for i in range(num_stages):
            dim = config.embed_dim * 2 ** i
            table_window = config.window_size
            if self.rules.table_from_img_size and stage_grids is not None:
                table_window, _ = clamp_window(stage_grids[i], config.window_size, config.window_size, self.rules.clamp)
            # training recomputes the first stage's MLP hidden map in backward: with the fewest
            # channels it holds the most elements per multiply-add (measured: no slower, less memory)
            stage = SwinStage(dim, config.depths[i], config.num_heads[i], table_window, table_window, self.rules,
                              config.mlp_ratio, config.qkv_bias, config.drop_rate, config.attn_drop_rate,
                              drop_paths[i], keep_mlp_hidden=i > 0)
            stage.downsample = PatchMerging(dim) if i < num_stages - 1 else None
            stage.workspace = self.layers[0].workspace if i else stage.workspace  # stages run one after another
            self.layers.append(stage)
            self.feature_info.append(dict(num_chs=dim, reduction=config.patch_size[-1] * 2 ** i, module=f"layers.{i}"))
        for i in config.norm_stages:
            if not 0 <= i < num_stages - 1:
                raise ValueError(f"norm_stages entries must be stage indices below {num_stages - 1}, got {i}")
        self.stage_norms = nn.ModuleDict({str(i): nn.LayerNorm(config.embed_dim * 2 ** i) for i in config.norm_stages})
        self.norm = nn.LayerNorm(self.num_features)
        head_drop = config.head_drop_rate
        if head_drop is None:
            head_drop = 0.5 if ndim == 3 else config.drop_rate
        self.head = ClassifierHead(self.num_features, config.num_classes, head_drop)
        self.apply(init_linear_and_norm)

    def _stage_grids(self, img_size: tuple[int, ...] | None) -> list[tuple[int, ...]] | None:
        if img_size is None:
            return None
        grid = self.patch_embed.output_grid(img_size)
        grids = []
        for _ in self.config.depths:
            grids.append(grid)
            grid = grid[:-2] + tuple(-(-g // 2) for g in grid[-2:])
        return grids

    @property
    def compat(self) -> str | None:
        return self.config.compat

    def set_compat(self, compat: str | None) -> None:
        """Switch the padding/clamping semantics (tables keep their shapes)."""
        self.config = dataclasses.replace(self.config, compat=check_compat(compat))
        self.rules = compat_rules(compat, self.config.ndim)
        self.patch_embed.floor = self.rules.floor_patch
        for stage in self.layers:
            stage.rules = self.rules
            for block in stage.blocks:
                block.rules = self.rules
                block.attn.sliced_index = self.rules.sliced_bias_index

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.layers:
            stage.grad_checkpointing = enable

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.config = dataclasses.replace(self.config, num_classes=num_classes)
        self.head.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            init_linear_and_norm(self.head.fc)

    def check_input(self, x: torch.Tensor) -> None:
        min_size = (1,) * self.config.ndim
        if self.rules.floor_patch:
            min_size = self.config.patch_size
        check_input(x, num_spatial_dims=self.config.ndim, in_chans=self.config.in_chans, min_size=min_size,
                    model_name=type(self).__name__ + ("(3D)" if self.config.ndim == 3 else "(2D)"))

    def _add_absolute_pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        grid = tuple(x.shape[1:-1])
        ref_grid = self.patch_embed.output_grid(self.config.img_size)
        pos = self.absolute_pos_embed.view(1, *ref_grid, -1)
        if grid != ref_grid:  # resample (bicubic) to the input's grid
            pos = F.interpolate(pos.permute(0, 3, 1, 2), size=grid, mode="bicubic", align_corners=False)
            pos = pos.permute(0, 2, 3, 1)
        return x + pos

    def forward_features(self, x: torch.Tensor, out_indices: Sequence[int] | None = None) -> list[torch.Tensor]:
        """Stage maps (B, C_i, *grid_i), channels-first, for ``out_indices`` (default: the last stage).

        Each map is the output of the stage's blocks before patch merging; the last stage (and any
        stage in ``config.norm_stages``) is layer-normalised.
        """
        self.check_input(x)
        num_stages = len(self.layers)
        wanted = [num_stages - 1] if out_indices is None else [i % num_stages for i in out_indices]
        for i in wanted:
            if not 0 <= i < num_stages:
                raise ValueError(f"out_indices must be in [-{num_stages}, {num_stages}), got {out_indices}")
        x = self.patch_embed(x)
        if self.absolute_pos_embed is not None:
            x = self._add_absolute_pos_embed(x)
        x = self.pos_drop(x)
        features = {}
        for i, stage in enumerate(self.layers):
            x = stage(x)
            if i in wanted:
                out = x
                if i == num_stages - 1:
                    out = self.norm(out)
                elif str(i) in self.stage_norms:
                    out = self.stage_norms[str(i)](out)
                features[i] = out.movedim(-1, 1)
            if stage.downsample is not None:
                if i >= max(wanted):
                    break
                x = stage.downsample(x)
        return [features[i] for i in wanted]

    def forward_head(self, features: torch.Tensor | list[torch.Tensor], pre_logits: bool = False) -> torch.Tensor:
        """Last-stage map (B, C, *grid) (or a list ending with it) -> logits (B, classes)."""
        if isinstance(features, (list, tuple)):
            features = features[-1]
        return self.head(features, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def build_swin(defaults: dict, overrides: dict) -> SwinTransformer:
    return SwinTransformer(SwinConfig.build(**{**defaults, **overrides}))


_IMAGE = dict(patch_size=4, mlp_ratio=4.0, qkv_bias=True, patch_norm=True, num_classes=1000)
_VIDEO = dict(patch_size=(2, 4, 4), window_size=(8, 7, 7), mlp_ratio=4.0, qkv_bias=True, patch_norm=True,
              num_classes=400, compat="video_swin")
_TINY = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))
_SMALL = dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24))
_BASE = dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))
_LARGE = dict(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48))


# Drop-path rates are those of the official ImageNet-1K / Kinetics configs (models.md section 1).
@register_model
def swin_t(**overrides) -> SwinTransformer:
    """Swin-T, 224x224, window 7 (28.3 M parameters, 4.5 GMACs)."""
    return build_swin({**_IMAGE, **_TINY, "window_size": 7, "img_size": 224, "drop_path_rate": 0.2}, overrides)


@register_model
def swin_s(**overrides) -> SwinTransformer:
    """Swin-S, 224x224, window 7 (49.6 M, 8.7 G)."""
    return build_swin({**_IMAGE, **_SMALL, "window_size": 7, "img_size": 224, "drop_path_rate": 0.3}, overrides)


@register_model
def swin_b(**overrides) -> SwinTransformer:
    """Swin-B, 224x224, window 7 (87.8 M, 15.4 G)."""
    return build_swin({**_IMAGE, **_BASE, "window_size": 7, "img_size": 224, "drop_path_rate": 0.5}, overrides)


@register_model
def swin_l(**overrides) -> SwinTransformer:
    """Swin-L, 224x224, window 7 (196.5 M, 34.5 G)."""
    return build_swin({**_IMAGE, **_LARGE, "window_size": 7, "img_size": 224, "drop_path_rate": 0.2}, overrides)


@register_model
def swin_b_384(**overrides) -> SwinTransformer:
    """Swin-B, 384x384, window 12 (87.9 M, 47.1 G)."""
    return build_swin({**_IMAGE, **_BASE, "window_size": 12, "img_size": 384, "drop_path_rate": 0.2}, overrides)


@register_model
def swin_l_384(**overrides) -> SwinTransformer:
    """Swin-L, 384x384, window 12 (196.7 M, 103.9 G)."""
    return build_swin({**_IMAGE, **_LARGE, "window_size": 12, "img_size": 384, "drop_path_rate": 0.2}, overrides)


@register_model
def video_swin_t(**overrides) -> SwinTransformer:
    """Video Swin-T, K400, patch 2x4x4, window 8x7x7 (28.2 M, 87.9 G per 32x224x224 view)."""
    return build_swin({**_VIDEO, **_TINY, "drop_path_rate": 0.1}, overrides)


@register_model
def video_swin_s(**overrides) -> SwinTransformer:
    """Video Swin-S, K400 (49.8 M, 165.9 G)."""
    return build_swin({**_VIDEO, **_SMALL, "drop_path_rate": 0.1}, overrides)


@register_model
def video_swin_b(**overrides) -> SwinTransformer:
    """Video Swin-B, K400 (88.0 M, 281.6 G)."""
    return build_swin({**_VIDEO, **_BASE, "drop_path_rate": 0.3}, overrides)


@register_model
def video_swin_l(**overrides) -> SwinTransformer:
    """Video Swin-L, K400 (197.0 M, 604 G)."""
    return build_swin({**_VIDEO, **_LARGE, "drop_path_rate": 0.4}, overrides)


@register_model
def video_swin_b_ssv2(**overrides) -> SwinTransformer:
    """Video Swin-B, Something-Something v2, window 16x7x7 (88.8 M, 320.6 G)."""
    return build_swin({**_VIDEO, **_BASE, "window_size": (16, 7, 7), "num_classes": 174, "drop_path_rate": 0.4},
                      overrides)
