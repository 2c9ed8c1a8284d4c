r"""Position-sensitive pooling by name, R-FCN's vote, and where each pooling's bins really look.

R-FCN (Dai et al., 2016) scores a RoI from :math:`k^2` groups of maps: bin :math:`(i, j)` of the RoI's
:math:`k \times k` grid is pooled from group :math:`(i, j)` only (input channel :math:`(c k + i) k + j` for
output channel :math:`c`, torchvision's layout and :func:`sodlib.ops.ps_prroi_pool`'s), then the bins vote:

.. math::
    r_c = \frac{1}{k^2} \sum_{i, j} \mathrm{pool}_{ij}(z_{(i, j), c}).

The three poolings (:data:`POOLINGS`) read the RoIs in one convention, feature cell :math:`j` at the image
point :math:`x = j / s` (:math:`s` the spatial scale, 1/16 at stride 16):

- ``"ps_roi_pool"``: torchvision's ``ps_roi_pool``: the RoI rounded to whole cells and each bin widened to whole
  cells (floor / ceil), the average of those cells;
- ``"ps_roi_align"``: torchvision's ``ps_roi_align`` with its half-cell shift undone
  (:func:`sodlib.ops.ps_roi_align_pixel_convention`): the mean of ``sampling_ratio``\ :sup:`2` bilinear samples;
- ``"ps_prroi"``: :func:`sodlib.ops.ps_prroi_pool`, the exact integral of the bilinearly interpolated map.

:func:`effective_bin_centres` measures through the ops themselves where a bin looks: pooling a map that holds its
own image coordinate, :math:`f(x, y) = x`, returns the mean :math:`x` of what the bin read.
"""
from __future__ import annotations

import torch
from torch import Tensor

from sodlib.ops.prroi import ps_prroi_pool
from sodlib.ops.torchvision_pooling import ps_roi_align_pixel_convention, ps_roi_pool

__all__ = ["POOLINGS", "check_pooling_name", "ps_pool", "position_sensitive_vote", "effective_bin_centres"]

#: The position-sensitive pooling ops, by name.
POOLINGS: tuple[str, ...] = ("ps_roi_pool", "ps_roi_align", "ps_prroi")


def check_pooling_name(pooling: str) -> None:
    """Refuse a pooling name that is not one of :data:`POOLINGS`, listing them."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling={pooling!r} is unknown; choose one of {', '.join(POOLINGS)}")


def ps_pool(maps: Tensor, rois: Tensor, k: int, spatial_scale: float, pooling: str, sampling_ratio: int = 2) -> Tensor:
    """Position-sensitive pooling by name (module docstring).

    ``maps``: ``Tensor[B, k^2 C, H, W]``; ``rois``: ``Tensor[R, 5]`` ``(image index, x1, y1, x2, y2)`` in image
    pixels. Returns ``Tensor[R, C, k, k]``. ``sampling_ratio`` is used by ``"ps_roi_align"`` only.
    """
    check_pooling_name(pooling)
    if pooling == "ps_prroi":
        return ps_prroi_pool(maps, rois, k, spatial_scale)
    if pooling == "ps_roi_align":
        return ps_roi_align_pixel_convention(maps, rois, k, spatial_scale, sampling_ratio)
    return ps_roi_pool(maps, rois, k, spatial_scale)


def position_sensitive_vote(pooled: Tensor) -> Tensor:
    """R-FCN's vote: ``Tensor[R, C, k, k]`` pooled bins -> ``Tensor[R, C]``, the mean over the ``k x k`` bins."""
    if pooled.dim() != 4:
        raise ValueError(f"pooled must be Tensor[R, C, k, k], got shape {tuple(pooled.shape)}")
    return pooled.mean(dim=(2, 3))


def effective_bin_centres(rois: Tensor, k: int, stride: int, feature_size: tuple[int, int], pooling: str,
                          sampling_ratio: int = 2) -> Tensor:
    """Where each bin of each RoI really looks, in image pixels: ``Tensor[R, k, k, 2]`` ``(x, y)``.

    Measured, not modelled: the op pools two coordinate maps, :math:`f(\\text{row}, \\text{col}) = \\text{stride}
    \\cdot \\text{col}` and :math:`\\text{stride} \\cdot \\text{row}` (the image point of each feature cell), on a
    map of ``feature_size = (H, W)`` cells. A linear map averages to the mean position it was read at, so
    ``ps_prroi`` and ``ps_roi_align`` return the centres of the exact bins (inside the map) and ``ps_roi_pool``
    the centre of the whole cells it averaged. ``rois``: ``Tensor[R, 5]`` with image index 0.
    """
    height, width = feature_size
    cols = torch.arange(width, dtype=torch.float64)[None, :].expand(height, width) * stride
    rows = torch.arange(height, dtype=torch.float64)[:, None].expand(height, width) * stride
    maps = torch.cat([cols[None].expand(k * k, height, width), rows[None].expand(k * k, height, width)])[None]
    pooled = ps_pool(maps.contiguous(), rois.double(), k, 1.0 / stride, pooling, sampling_ratio)  # [R, 2, k, k]
    return pooled.permute(0, 2, 3, 1).contiguous()
