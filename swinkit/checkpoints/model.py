"""``load_model`` / ``inspect_checkpoint``: the right model built straight from a checkpoint file."""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Sequence

import torch
import torch.nn as nn

from swinkit.checkpoints.infer import infer_shunted, infer_swin
from swinkit.checkpoints.io import CheckpointError
from swinkit.checkpoints.load import Checkpoint, LoadReport, load_checkpoint, read_native

# Fields that make two configs the same architecture (the rest is training-time or head settings).
_ARCH_FIELDS = {
    "swin": ("patch_size", "embed_dim", "depths", "num_heads", "window_size", "mlp_ratio"),
    "video_swin": ("patch_size", "embed_dim", "depths", "num_heads", "window_size", "mlp_ratio"),
    "shunted": ("embed_dims", "depths", "num_heads", "mlp_ratios", "sr_ratios", "num_conv"),
}


_VARIANT_PATTERNS = {"swin": "swin_*", "video_swin": "video_swin_*", "shunted": "shunted_*"}


@dataclass
class CheckpointInfo:
    """A checkpoint, the model it describes, and how it loaded."""

    path: str
    format: str
    wrapper: str | None
    family: str
    variant: str | None  # registered model with the same architecture, if any
    model: nn.Module
    report: LoadReport | None  # None until loaded
    assumed: list[str] = field(default_factory=list)  # what the tensors could not tell
    checkpoint: Checkpoint | None = field(default=None, repr=False)

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def __str__(self) -> str:
        config = {k: v for k, v in dataclasses.asdict(self.model.config).items()}
        lines = [f"checkpoint: {self.path}",
                 f"format: {self.format}" + (f" (state dict under '{self.wrapper}')" if self.wrapper else ""),
                 f"family: {self.family}",
                 f"architecture: {self.variant or 'custom'} " + json.dumps(config),
                 f"parameters: {self.num_params:,}"]
        lines += [f"assumed: {a}" for a in self.assumed]
        return "\n".join(lines + ([str(self.report)] if self.report is not None else []))


def _model_classes(family: str):
    if family == "shunted":
        import swinkit.models.shunted as shunted  # registers shunted_t/s/b

        return shunted.ShuntedConfig, shunted.ShuntedTransformer
    from swinkit.models.swin import SwinConfig, SwinTransformer

    return SwinConfig, SwinTransformer


def _make_config(family: str, kwargs: dict):
    config_class, _ = _model_classes(family)
    if family == "shunted":
        return config_class(**kwargs)
    return config_class.build(**kwargs)


@lru_cache(maxsize=None)
def _variant_configs(family: str) -> dict[str, object]:
    """Config of every registered model of ``family`` (built on the meta device: no memory)."""
    from swinkit.models.registry import create_model, list_models

    _model_classes(family)
    out = {}
    with torch.device("meta"):
        for name in list_models(_VARIANT_PATTERNS[family]):
            model = create_model(name)
            if getattr(model, "family", None) == family:
                out[name] = model.config
    return out


def matching_variant(family: str, config) -> str | None:
    """The registered model whose architecture equals ``config``'s, or None."""
    fields = _ARCH_FIELDS[family]
    for name, variant in _variant_configs(family).items():
        if all(getattr(variant, f) == getattr(config, f) for f in fields):
            return name
    return None


def _build(ckpt: Checkpoint, overrides: dict) -> tuple[nn.Module, str | None, list[str]]:
    """Model for ``ckpt``: its stored config (swinkit files) or its inferred architecture, plus ``overrides``."""
    if ckpt.native_config is not None:
        family, kwargs, assumed = ckpt.family, {**ckpt.native_config, **overrides}, []
    else:
        try:
            arch = (infer_shunted(ckpt.state, overrides) if ckpt.family == "shunted"
                    else infer_swin(ckpt.state, ckpt.derived, ckpt.format))
        except (KeyError, ValueError) as err:
            raise CheckpointError(f"{ckpt.name}: cannot infer the architecture: {err}") from None
        family, assumed = arch.family, arch.assumed
        kwargs = {**arch.kwargs, **overrides}
    config = _make_config(family, kwargs)
    variant = matching_variant(family, config)
    if variant is not None and ckpt.native_config is None:
        from swinkit.models.registry import create_model

        # the variant's builder supplies what tensors cannot tell (drop-path rate, image size)
        model = create_model(variant, **kwargs)
    else:
        model = _model_classes(family)[1](config)
    return model, variant, assumed


def describe_checkpoint(source, *, format: str | None = None, **overrides) -> CheckpointInfo:
    """Read ``source`` (path or state dict) and build, without loading, the model it describes.

    Builds on the current default device, so ``with torch.device("meta"):`` inspects full-size
    checkpoints without allocating their weights. ``report`` is None.
    """
    ckpt = read_native(source, format)
    model, variant, assumed = _build(ckpt, overrides)
    return CheckpointInfo(ckpt.name, ckpt.format, ckpt.wrapper, ckpt.family, variant, model, None, assumed, ckpt)


def inspect_checkpoint(path: str | os.PathLike, *, strict: bool = True, format: str | None = None,
                       class_subset: Sequence[int] | None = None, **overrides) -> CheckpointInfo:
    """Read ``path``, build the model it describes (``overrides``: official argument names) and load it."""
    info = describe_checkpoint(path, format=format, **overrides)
    info.report = load_checkpoint(info.model, info.checkpoint, strict=strict, class_subset=class_subset)
    info.model.eval()
    return info


def load_model(path: str | os.PathLike, *, strict: bool = True, format: str | None = None,
               class_subset: Sequence[int] | None = None, **overrides) -> nn.Module:
    """Build the right model straight from a checkpoint of any supported layout, weights loaded, in eval mode.

    The architecture (family, embed dims, depths, heads, window, patch, MLP ratio, classes, stem
    convs, reduction ratios, image size where tables depend on it) is read from the tensors, or
    from the config stored in a swinkit file. ``overrides`` (official argument names, e.g.
    ``num_classes=10``, ``window_size=12``, ``num_heads=...``) replace inferred values; tensors are
    adapted to them where that is well defined (see :func:`load_checkpoint`). ``strict=False``
    loads what fits; the report is in :func:`inspect_checkpoint`'s answer.
    """
    return inspect_checkpoint(path, strict=strict, format=format, class_subset=class_subset, **overrides).model
