"""torchvision's RoI pooling ops, for like-with-like comparisons with precise RoI pooling.

- ``roi_pool`` / ``RoIPool`` (Fast R-CNN): rounds the RoI to the feature grid, splits it into bins with
  floor/ceil, and max-pools each bin: two quantisations.
- ``roi_align`` / ``RoIAlign`` (Mask R-CNN): averages ``sampling_ratio**2`` bilinear samples per bin
  (an adaptive ``ceil(bin size)`` when ``sampling_ratio <= 0``). With ``aligned=False`` it uses
  PrRoI's pixel convention (pixel ``j`` at ``x = j``), and as ``sampling_ratio`` grows its average
  converges to PrRoI's exact integral inside the map. Beyond the map border it clamps instead of
  fading to zero, so the two differ there.
- ``ps_roi_pool`` / ``PSRoIPool`` (R-FCN): ``roi_pool``'s two quantisations, per position-sensitive bin
  (an average of the bin's cells, not a max).
- ``ps_roi_align`` / ``PSRoIAlign`` (R-FCN with alignment): the position-sensitive layout of
  :func:`sodlib.ops.ps_prroi_pool`, with a fixed half-pixel shift (pixel ``j`` at ``x = j + 0.5``).

:func:`ps_roi_align_pixel_convention` undoes that shift, so that every op here can be called on the same
RoIs in PrRoI's convention.
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor
from torchvision.ops import PSRoIAlign, PSRoIPool, RoIAlign, RoIPool, ps_roi_align, ps_roi_pool, roi_align, roi_pool

from sodlib.ops.arguments import RoIs, check_pooling_arguments

__all__ = [
    "PSRoIAlign",
    "PSRoIPool",
    "RoIAlign",
    "RoIPool",
    "ps_roi_align",
    "ps_roi_align_pixel_convention",
    "ps_roi_pool",
    "roi_align",
    "roi_pool",
]


def ps_roi_align_pixel_convention(
    input: Tensor, rois: RoIs, output_size: int | Sequence[int], spatial_scale: float = 1.0, sampling_ratio: int = -1
) -> Tensor:
    """``torchvision.ops.ps_roi_align`` on RoIs in PrRoI's convention (pixel ``j`` at ``x = j``).

    ``ps_roi_align`` samples the box ``rois * spatial_scale - 0.5``; shifting the RoIs by ``+0.5 / spatial_scale``
    makes it sample ``rois * spatial_scale``, the box :func:`sodlib.ops.ps_prroi_pool` integrates over.
    ``input``: ``Tensor[N, C_out * kh * kw, H, W]``; returns ``Tensor[K, C_out, kh, kw]``.
    """
    rois, kh, kw = check_pooling_arguments(input, rois, output_size, spatial_scale, True, "ps_roi_align_pixel_convention")
    shifted = rois.clone()
    shifted[:, 1:] += 0.5 / spatial_scale
    return ps_roi_align(input, shifted, (kh, kw), spatial_scale, sampling_ratio)
