"""``load_checkpoint``: any supported layout into a swinkit model, all-or-nothing, with a report."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn as nn

from swinkit.checkpoints import formats
from swinkit.checkpoints.io import CheckpointError, read_checkpoint


@dataclass
class LoadReport:
    """What happened to every key when a checkpoint was loaded."""

    source_format: str = ""
    wrapper: str | None = None
    loaded: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)  # adapted to a new shape (tables, patch kernels, inflation)
    reinitialized: list[str] = field(default_factory=list)  # kept the model's fresh values on purpose (e.g. head)
    ignored: list[str] = field(default_factory=list)  # derived buffers (rebuilt by swinkit), a dropped classifier
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # (key, checkpoint, model shape)
    compat: str | None = None
    compat_set: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        lines = [f"LoadReport: format={self.source_format}" + (f" (under '{self.wrapper}')" if self.wrapper else ""),
                 f"  compat: {self.compat}" + (" (set from the checkpoint)" if self.compat_set else "")]
        for name in ("loaded", "resized", "reinitialized", "ignored", "missing", "unexpected"):
            keys = getattr(self, name)
            lines.append(f"  {name}: {len(keys)}" + (f"  {_preview(keys)}" if keys and name != "loaded" else ""))
        lines.append(f"  mismatched: {len(self.mismatched)}")
        lines += [f"    {k}: checkpoint {list(a)} vs model {list(b)}" for k, a, b in self.mismatched[:10]]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _preview(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return f"[{shown}{', ...' if len(keys) > limit else ''}]"


def read_state_dict(source) -> tuple[dict[str, torch.Tensor], str | None, dict[str, str]]:
    """(state dict, wrapper key, safetensors metadata) from a path or an in-memory object."""
    metadata: dict[str, str] = {}
    if isinstance(source, (str, os.PathLike)):
        obj, metadata = read_checkpoint(source)
    else:
        obj = source
    try:
        state, wrapper = formats.unwrap(obj)
    except ValueError as err:
        where = f" in {source}" if isinstance(source, (str, os.PathLike)) else ""
        raise CheckpointError(f"{err}{where}") from None
    return state, wrapper, metadata


@dataclass
class Checkpoint:
    """A checkpoint read and renamed to native keys, derived buffers set apart."""

    name: str  # the file, or "state dict"
    format: str
    family: str  # "swin" | "video_swin" | "shunted"
    state: dict[str, torch.Tensor]
    derived: dict[str, torch.Tensor]  # relative position indices, Microsoft attention masks (native keys)
    wrapper: str | None = None
    native_config: dict | None = None  # the full model config stored in a swinkit file


def read_native(source, format: str | None = None) -> Checkpoint:
    """Read ``source`` (path, state dict or wrapped checkpoint) of any supported layout into native keys."""
    if isinstance(source, Checkpoint):
        return source
    name = str(source) if isinstance(source, (str, os.PathLike)) else "state dict"
    state, wrapper, metadata = read_state_dict(source)
    try:
        stored = metadata.get("format")  # other tools write e.g. "pt" there: only a layout name is used
        fmt = format or (stored if stored in formats.ALL_FORMATS else None) or formats.detect_format(state)
        if fmt not in formats.ALL_FORMATS:
            raise ValueError(f"unknown checkpoint format {fmt!r}; expected one of {formats.ALL_FORMATS}")
        family = formats.state_family(state)
        if fmt != "swinkit" and (family == "shunted") != (fmt == "shunted"):
            raise ValueError(f"a {family} state dict cannot be read as the {fmt!r} layout")
        if family != "shunted":
            state = formats.to_native(state, fmt)
        native_config = json.loads(metadata["config"]) if stored == "swinkit" and "config" in metadata else None
    except ValueError as err:  # json.JSONDecodeError included
        raise CheckpointError(f"{name}: {err}") from None
    kept, derived_keys = formats.split_derived(state)
    return Checkpoint(name, fmt, family, kept, {k: state[k] for k in derived_keys}, wrapper, native_config)


def model_family(model: nn.Module) -> str:
    return getattr(model, "family", type(model).__name__)


_FAMILY_NAMES = {"swin": "2D Swin", "video_swin": "Video Swin (3D)", "shunted": "Shunted Transformer"}


def _check_family(model: nn.Module, ckpt: Checkpoint) -> None:
    family = model_family(model)
    if ckpt.family == family or (ckpt.family == "swin" and family == "video_swin"):  # 2D -> 3D: inflation
        return
    hint = " (build a video_swin_* model instead)" if ckpt.family == "video_swin" and family == "swin" else ""
    raise CheckpointError(f"{ckpt.name} holds a {_FAMILY_NAMES.get(ckpt.family, ckpt.family)} checkpoint "
                          f"({ckpt.format} layout) but the model is a {_FAMILY_NAMES.get(family, family)}{hint}")


def load_checkpoint(model: nn.Module, source, strict: bool = True, *, format: str | None = None,
                    inflate: str = "inflate", class_subset: Sequence[int] | None = None) -> LoadReport:
    """Load ``source`` (path or state dict, any supported layout) into ``model``.

    The layout is detected from the keys (or given by ``format``); derived buffers are ignored
    and regenerated. Tensors that differ from the model's are adapted where that is well defined
    (:mod:`swinkit.checkpoints.adapt`): bias tables for another window, patch kernels for another
    patch or channel count, a 2D checkpoint inflated into a video model (``inflate`` = "inflate"
    or "center"), the classifier for another number of classes (re-initialised, or narrowed to
    ``class_subset``, the checkpoint's class indices to keep). Nothing is copied into the model
    unless every key fits; with ``strict=True`` (default) any missing, unexpected or mismatched key
    raises :class:`CheckpointError` carrying the report. When ``model.compat`` is None it is set to
    the source implementation's semantics (not when inflating).
    """
    from swinkit.checkpoints.adapt import adapt_state_dict

    ckpt = read_native(source, format)
    _check_family(model, ckpt)
    report = LoadReport(source_format=ckpt.format, wrapper=ckpt.wrapper, ignored=sorted(ckpt.derived))
    try:
        state = adapt_state_dict(ckpt.state, model, report, ckpt.derived, inflate=inflate, class_subset=class_subset)
    except ValueError as err:
        raise CheckpointError(f"{ckpt.name}: {err}") from None

    target = model.state_dict()
    report.unexpected = [k for k in state if k not in target]
    report.missing = [k for k in target if k not in state and k not in report.reinitialized]
    report.mismatched = [(k, tuple(v.shape), tuple(target[k].shape)) for k, v in state.items()
                         if k in target and v.shape != target[k].shape]
    if strict and not report.ok:
        raise CheckpointError(f"{ckpt.name} does not fit the model (nothing was loaded):\n{report}")
    fitting = {k: v for k, v in state.items() if k in target and v.shape == target[k].shape}
    report.loaded = sorted(fitting)
    model.load_state_dict(fitting, strict=False)

    if ckpt.native_config is not None:
        source_compat = ckpt.native_config.get("compat")
    else:
        source_compat = formats.FORMAT_COMPAT.get(ckpt.format)
    same_kind = ckpt.family == model_family(model)
    if (same_kind and hasattr(model, "set_compat") and getattr(model, "compat", None) is None
            and source_compat is not None):
        model.set_compat(source_compat)
        report.compat_set = True
    report.compat = getattr(model, "compat", None)
    return report
