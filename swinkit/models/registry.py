"""Model registry: one name -> one builder function, timm style.

Builders take the official argument names as keyword overrides and return an
``nn.Module`` whose ``config`` attribute is the frozen dataclass it was built from.
"""
from __future__ import annotations

import fnmatch
from typing import Callable

import torch.nn as nn

_MODEL_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def register_model(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register ``builder`` under its function name."""
    name = builder.__name__
    if name in _MODEL_BUILDERS:
        raise ValueError(f"model {name!r} is already registered")
    _MODEL_BUILDERS[name] = builder
    return builder


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted names of registered models, optionally filtered by a glob ``pattern``."""
    names = sorted(_MODEL_BUILDERS)
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    return names


def is_model(name: str) -> bool:
    return name in _MODEL_BUILDERS


def create_model(name: str, **overrides) -> nn.Module:
    """Build the registered model ``name``; ``overrides`` use the official argument names."""
    if name not in _MODEL_BUILDERS:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(list_models())}")
    return _MODEL_BUILDERS[name](**overrides)
