"""Where the official Swin implementations disagree, as small explicit rules.

``compat`` names one implementation; :func:`compat_rules` turns it into the handful of
switches the N-D code reads. See models.md sections 2-4 and 10.

=============  ============  ===========================  ==============  ==================
compat         patch embed   window clamp                 pad vs. roll    bias index
=============  ============  ===========================  ==============  ==================
None (2D)      zero-pad      per axis (grid <= window)    pad, then roll  geometric
"video_swin"   zero-pad      per axis                     pad, then roll  official [:N, :N]
"torchvision"  floor (2D)    never shrink (2D)            pad, then roll  [:N, :N] (3D)
"timm"         floor         per axis                     roll, then pad  geometric
"microsoft"    zero-pad      both axes if min side fits   roll, then pad  geometric
=============  ============  ===========================  ==============  ==================

``None`` in 3D means "video_swin" (the official Video Swin semantics); torchvision's 3D model is
numerically the Video Swin one. The 2D default (``None``) is the clean choice: no input is lost
in the patch embedding, each axis is clamped on its own, and the relative position bias always
uses the true offsets.
"""
from __future__ import annotations

from dataclasses import dataclass

COMPAT_MODES = ("video_swin", "torchvision", "timm", "microsoft")


@dataclass(frozen=True)
class CompatRules:
    floor_patch: bool  # drop input pixels that do not fill a patch instead of zero-padding
    clamp: str  # "per_axis" | "min_side" | "never"
    roll_before_pad: bool
    sliced_bias_index: bool  # official Video Swin `relative_position_index[:N, :N]`
    table_from_img_size: bool  # bias tables built for the window clamped to the img_size grid


def check_compat(compat: str | None) -> str | None:
    if compat is not None and compat not in COMPAT_MODES:
        raise ValueError(f"compat must be None or one of {COMPAT_MODES}, got {compat!r}")
    return compat


def compat_rules(compat: str | None, ndim: int) -> CompatRules:
    check_compat(compat)
    if ndim == 3 or compat == "video_swin":
        return CompatRules(False, "per_axis", False, True, False)
    if compat == "torchvision":
        return CompatRules(True, "never", False, False, False)
    if compat == "timm":
        return CompatRules(True, "per_axis", True, False, True)
    if compat == "microsoft":
        return CompatRules(False, "min_side", True, False, True)
    return CompatRules(False, "per_axis", False, False, False)


def clamp_window(grid: tuple[int, ...], window: tuple[int, ...], shift: tuple[int, ...],
                 clamp: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Window and shift actually used on a feature grid (before padding).

    ``per_axis``: an axis whose grid fits in the window uses the grid as window and no shift.
    ``min_side``: if the smallest side fits, every axis uses it as window and nothing shifts.
    ``never``: keep the window (the grid is padded up to it); an axis whose padded size equals
    the window is not shifted.
    """
    if clamp == "per_axis":
        new_window = tuple(g if g <= w else w for g, w in zip(grid, window))
        new_shift = tuple(0 if g <= w else s for g, w, s in zip(grid, window, shift))
        return new_window, new_shift
    if clamp == "min_side":
        side = min(grid)
        if side <= min(window):
            return (side,) * len(grid), (0,) * len(grid)
        return tuple(window), tuple(shift)
    if clamp == "never":
        padded = tuple(-(-g // w) * w for g, w in zip(grid, window))
        return tuple(window), tuple(0 if w >= p else s for w, p, s in zip(window, padded, shift))
    raise ValueError(f"unknown clamp rule {clamp!r}")
