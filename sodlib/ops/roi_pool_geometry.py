"""Where RoIPool's bins really lie, compared with the exact bins PrRoI / RoIAlign integrate over.

RoIPool (Fast R-CNN; torchvision ``roi_pool``) quantises twice:

1. the RoI: ``start = round(x1 * scale)``, ``end = round(x2 * scale)`` (C ``round``: half away from zero),
   width ``max(end - start + 1, 1)`` feature cells;
2. the bins: bin ``j`` covers cells ``[floor(j * w / k), ceil((j + 1) * w / k))`` of the rounded RoI,
   clipped to the map.

With feature cell ``j`` standing for the image point ``x = j / scale`` (the convention of PrRoI and of
``roi_align(aligned=False)``), a run of cells ``[a, b)`` represents the image interval
``[(a - 1/2) / scale, (b - 1/2) / scale]``. These functions reproduce torchvision's integer arithmetic
(the tests check them against ``roi_pool`` itself) and return both kinds of bins in image pixels.
"""
from __future__ import annotations

import torch
from torch import Tensor


def round_half_away_from_zero(x: Tensor) -> Tensor:
    """C's ``round``: ``2.5 -> 3``, ``-2.5 -> -3`` (``torch.round`` rounds half to even)."""
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


def roi_pool_cells(rois: Tensor, output_size: tuple[int, int], spatial_scale: float,
                   feature_size: tuple[int, int]) -> Tensor:
    """Feature cells max-pooled by each RoIPool bin: ``Tensor[K, kh, kw, 4]`` as ``(x_start, y_start, x_end, y_end)``,
    end exclusive, clipped to the map of ``feature_size = (H, W)``. ``rois``: ``Tensor[K, 5]``."""
    kh, kw = output_size
    height, width = feature_size
    start_x, start_y, end_x, end_y = round_half_away_from_zero(rois[:, 1:] * spatial_scale).long().unbind(1)
    roi_w = (end_x - start_x + 1).clamp(min=1).double()
    roi_h = (end_y - start_y + 1).clamp(min=1).double()
    j = torch.arange(kw, dtype=torch.float64)
    i = torch.arange(kh, dtype=torch.float64)
    x0 = (torch.floor(j * (roi_w / kw)[:, None]).long() + start_x[:, None]).clamp(0, width)      # [K, kw]
    x1 = (torch.ceil((j + 1) * (roi_w / kw)[:, None]).long() + start_x[:, None]).clamp(0, width)
    y0 = (torch.floor(i * (roi_h / kh)[:, None]).long() + start_y[:, None]).clamp(0, height)     # [K, kh]
    y1 = (torch.ceil((i + 1) * (roi_h / kh)[:, None]).long() + start_y[:, None]).clamp(0, height)
    k = rois.shape[0]
    return torch.stack([x0[:, None, :].expand(k, kh, kw), y0[:, :, None].expand(k, kh, kw),
                        x1[:, None, :].expand(k, kh, kw), y1[:, :, None].expand(k, kh, kw)], dim=-1)


def roi_pool_bins_in_pixels(rois: Tensor, output_size: tuple[int, int], spatial_scale: float,
                            feature_size: tuple[int, int]) -> Tensor:
    """RoIPool's bins as image intervals ``Tensor[K, kh, kw, 4]`` (x1, y1, x2, y2): cells ``[a, b)`` become
    ``[(a - 1/2) / scale, (b - 1/2) / scale]``."""
    cells = roi_pool_cells(rois, output_size, spatial_scale, feature_size).double()
    return (cells - 0.5) / spatial_scale


def exact_bins_in_pixels(rois: Tensor, output_size: tuple[int, int]) -> Tensor:
    """The bins PrRoI (and RoIAlign) pool over: the RoI split evenly, ``Tensor[K, kh, kw, 4]`` in image pixels."""
    kh, kw = output_size
    x1, y1, x2, y2 = rois[:, 1:].double().unbind(1)
    j = torch.arange(kw, dtype=torch.float64)
    i = torch.arange(kh, dtype=torch.float64)
    bx0 = x1[:, None] + j * ((x2 - x1) / kw)[:, None]
    bx1 = x1[:, None] + (j + 1) * ((x2 - x1) / kw)[:, None]
    by0 = y1[:, None] + i * ((y2 - y1) / kh)[:, None]
    by1 = y1[:, None] + (i + 1) * ((y2 - y1) / kh)[:, None]
    k = rois.shape[0]
    return torch.stack([bx0[:, None, :].expand(k, kh, kw), by0[:, :, None].expand(k, kh, kw),
                        bx1[:, None, :].expand(k, kh, kw), by1[:, :, None].expand(k, kh, kw)], dim=-1)


def bin_misalignment_px(rois: Tensor, output_size: tuple[int, int], spatial_scale: float,
                        feature_size: tuple[int, int]) -> Tensor:
    """Distance in image pixels between the centre of each RoIPool bin and the centre of the exact bin:
    ``Tensor[K, kh, kw]``."""
    quantised = roi_pool_bins_in_pixels(rois, output_size, spatial_scale, feature_size)
    exact = exact_bins_in_pixels(rois, output_size)
    centre = lambda b: torch.stack([(b[..., 0] + b[..., 2]) / 2, (b[..., 1] + b[..., 3]) / 2], dim=-1)  # noqa: E731
    return (centre(quantised) - centre(exact)).norm(dim=-1)
