r"""Which pyramid level a RoI is pooled from, in FPN and in EFPN: the arithmetic, shared by the models and the pictures.

FPN (Lin et al., 2017, eq. 1) sends a RoI of width ``w`` and height ``h`` (pixels of the resized image) to

.. math::
    l = \mathrm{clamp}\bigl(\lfloor l_0 + \log_2(\sqrt{wh} / 224) \rfloor,\ 2,\ 5\bigr), \qquad l_0 = 4,

where 224 is ImageNet's canonical input side: a 224 px RoI is pooled from ``P4`` (stride 16), each halving of the
side moves one level down, and everything under 112 px lands on ``P2`` (stride 4), the finest level there is.
This is torchvision's ``LevelMapper`` (which adds ``1e-6`` before the floor, so that a side exactly on a boundary
goes up).

EFPN (Deng et al., 2021, eq. 2 and §IV-A) extends the pyramid one level down, ``P'2`` at stride 2, and sends the
RoIs whose side is under a threshold ``T`` there; the rest keep FPN's levels. With the formula extended down
(``l <= 1``) the threshold would be 56 px, which is what the paper uses for Tsinghua-Tencent 100K resized to
1400 x 1400; for COCO at a shorter side of 800 it uses 112 px (every RoI FPN would put on ``P2``). The two do not
follow from one rule; sodlib's default scales the TT100K choice with the input, ``T = 56 * min_size / 1400`` (4 %
of the resized short side), and takes any other ``T`` as an option.
"""
from __future__ import annotations

import numpy as np

__all__ = ["CANONICAL_SCALE", "CANONICAL_LEVEL", "FPN_LEVELS", "EXTENDED_LEVEL", "LEVEL_EPS", "fpn_level",
           "efpn_level", "default_extended_threshold", "level_name", "level_stride", "cells_covered"]

CANONICAL_SCALE = 224.0
CANONICAL_LEVEL = 4
FPN_LEVELS = (2, 5)          # P2..P5 carry RoIs in FPN (P6, "pool", only proposals)
EXTENDED_LEVEL = 1           # EFPN's P'2: stride 2
LEVEL_EPS = 1e-6             # as torchvision's LevelMapper

#: The paper's threshold for TT100K (RoIs under 56 px of a 1400 px image go to P'2), the base of the default.
TT100K_THRESHOLD, TT100K_INPUT = 56.0, 1400


def fpn_level(side, k_min: int = FPN_LEVELS[0], k_max: int = FPN_LEVELS[1]) -> np.ndarray:
    """FPN's level of RoIs with ``side = sqrt(w h)`` (array-like, pixels of the resized image), an int array:
    ``clamp(floor(4 + log2(side / 224) + 1e-6), k_min, k_max)``."""
    side = np.asarray(side, dtype=np.float64)
    if np.any(~(side > 0)):
        raise ValueError("side must be positive (sqrt of a RoI's area, in pixels of the resized image)")
    level = np.floor(CANONICAL_LEVEL + np.log2(side / CANONICAL_SCALE) + LEVEL_EPS)
    return np.clip(level, k_min, k_max).astype(np.int64)


def efpn_level(side, threshold: float) -> np.ndarray:
    """EFPN's level: :data:`EXTENDED_LEVEL` (``P'2``) for ``side < threshold``, FPN's level otherwise."""
    if not threshold > 0:
        raise ValueError(f"threshold={threshold!r} must be a positive RoI side in pixels")
    side = np.asarray(side, dtype=np.float64)
    return np.where(side < threshold, EXTENDED_LEVEL, fpn_level(side))


def default_extended_threshold(min_size: float) -> float:
    """``56 * min_size / 1400``: the RoI side under which EFPN pools from ``P'2`` (see the module docstring)."""
    if not min_size > 0:
        raise ValueError(f"min_size={min_size!r} must be positive (the resized image's short side)")
    return TT100K_THRESHOLD * float(min_size) / TT100K_INPUT


def level_name(level: int) -> str:
    """``"P'2"`` for EFPN's extended level (level 1, stride 2), ``"P<level>"`` otherwise."""
    return "P'2" if int(level) == EXTENDED_LEVEL else f"P{int(level)}"


def level_stride(level) -> np.ndarray:
    """Stride ``2 ** level`` of pyramid level ``level`` (``P'2`` is level 1, stride 2)."""
    return np.power(2, np.asarray(level, dtype=np.int64))


def cells_covered(side, level) -> np.ndarray:
    """How many feature cells a square RoI of ``side`` pixels covers on ``level``: ``(side / stride) ** 2``."""
    return (np.asarray(side, dtype=np.float64) / level_stride(level)) ** 2

