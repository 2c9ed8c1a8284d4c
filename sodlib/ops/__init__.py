"""RoI pooling ops: precise RoI pooling (compiled, with a pure-PyTorch reference) and torchvision's ops.

- :func:`prroi_pool`, :func:`ps_prroi_pool`, :class:`PrRoIPool`, :class:`PSPrRoIPool`: precise RoI pooling
  and its position-sensitive variant, differentiable in the features and the RoI coordinates.
- :func:`prroi_pool_reference`, :func:`ps_prroi_pool_reference`: the same math in plain PyTorch.
- :func:`roi_align_reference`: torchvision's RoIAlign (fixed sampling ratio) in plain PyTorch, with the box
  gradient torchvision does not return.
- :func:`roi_pool`, :func:`roi_align`, :func:`ps_roi_align` and their modules, from torchvision.
- :func:`ps_pool` (the three position-sensitive poolings by name), :func:`position_sensitive_vote` (R-FCN's
  vote), :func:`effective_bin_centres` (where each pooling's bins really look).

Shapes: input ``Tensor[N, C, H, W]``, RoIs ``Tensor[K, 5]`` ``(batch_index, x1, y1, x2, y2)`` or a list of
``Tensor[L, 4]``, output ``Tensor[K, C, kh, kw]`` (``C / (kh * kw)`` channels for the position-sensitive ops).
"""
from sodlib.ops.extension import EXTENSION_LOADED, has_compiled_kernel
from sodlib.ops.position_sensitive import POOLINGS, effective_bin_centres, position_sensitive_vote, ps_pool
from sodlib.ops.prroi import PrRoIPool, PSPrRoIPool, prroi_pool, ps_prroi_pool
from sodlib.ops.prroi_reference import prroi_pool_reference, ps_prroi_pool_reference
from sodlib.ops.roi_align_reference import roi_align_reference
from sodlib.ops.torchvision_pooling import (
    PSRoIAlign,
    PSRoIPool,
    RoIAlign,
    RoIPool,
    ps_roi_align,
    ps_roi_align_pixel_convention,
    ps_roi_pool,
    roi_align,
    roi_pool,
)

__all__ = [
    "EXTENSION_LOADED",
    "POOLINGS",
    "PSPrRoIPool",
    "PSRoIAlign",
    "PSRoIPool",
    "PrRoIPool",
    "RoIAlign",
    "RoIPool",
    "effective_bin_centres",
    "has_compiled_kernel",
    "prroi_pool",
    "prroi_pool_reference",
    "position_sensitive_vote",
    "ps_pool",
    "ps_prroi_pool",
    "ps_prroi_pool_reference",
    "ps_roi_align",
    "ps_roi_align_pixel_convention",
    "ps_roi_pool",
    "roi_align",
    "roi_align_reference",
    "roi_pool",
]
