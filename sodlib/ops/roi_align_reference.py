r"""RoIAlign in plain PyTorch, differentiable in the RoI coordinates.

torchvision's ``roi_align`` returns no gradient for the boxes, but with a fixed ``sampling_ratio`` ``n`` its
output *is* a function of them that autograd can follow almost everywhere: each bin averages ``n x n``
bilinear samples at

.. math::
    x_s = x_1 + (p + (s + \tfrac12) / n)\, \frac{x_2 - x_1}{k_w}, \qquad p = 0..k_w - 1,\ s = 0..n - 1

(likewise ``y``), and bilinear interpolation is linear in ``x`` (and in ``y``) between pixel lines, so the output is
piecewise bilinear in the box: continuous, with a gradient that jumps whenever a sample crosses a pixel line.
Precise RoI pooling integrates the whole bin instead, and its gradient is continuous (Zhang et al., 2021, eq. 7).

Interpolation follows torchvision's rules exactly: a sample beyond one pixel outside the map reads 0; within
that pixel it is clamped to the border (``x <= 0`` reads column 0; ``x >= W - 1`` reads column ``W - 1``); with
``aligned=False`` a RoI smaller than one cell is stretched to one cell; ``aligned=True`` shifts the RoI by half
a pixel. Interpolation is separable, so a bin's mean is ``sum_{s,t} R[s, :] V X[t, :]^T / n^2`` with one row
weight matrix ``R`` and one column weight matrix ``X`` per RoI, two ``einsum`` per image.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from sodlib.ops.arguments import RoIs, check_pooling_arguments

__all__ = ["roi_align_reference", "sample_weights"]


def sample_weights(coordinates: Tensor, size: int) -> Tensor:
    """Bilinear weights ``Tensor[..., size]`` of the pixels ``0 .. size-1`` at sample ``coordinates`` ``Tensor[...]``
    along one axis, with torchvision's border rules (0 beyond ``[-1, size]``, clamped inside it)."""
    inside = (coordinates >= -1.0) & (coordinates <= size)
    clamped = coordinates.clamp(min=0.0)
    low = clamped.detach().floor().clamp(max=size - 1)
    fraction = torch.where(low >= size - 1, torch.zeros_like(clamped), clamped - low)
    high = (low + 1).clamp(max=size - 1)
    pixels = torch.arange(size, device=coordinates.device, dtype=coordinates.dtype)
    weights = (pixels == low[..., None]) * (1 - fraction)[..., None] + (pixels == high[..., None]) * fraction[..., None]
    return weights * inside[..., None]


def _axis_weights(start: Tensor, length: Tensor, bins: int, samples: int, size: int) -> Tensor:
    """``Tensor[K, bins, samples, size]``: pixel weights of each bin's samples along one axis."""
    offsets = torch.arange(bins, device=start.device, dtype=start.dtype)[:, None] + \
        (torch.arange(samples, device=start.device, dtype=start.dtype) + 0.5) / samples       # [bins, samples]
    coordinates = start[:, None, None] + offsets * (length / bins)[:, None, None]             # [K, bins, samples]
    return sample_weights(coordinates, size)


def roi_align_reference(
    input: Tensor, rois: RoIs, output_size: int | Sequence[int], spatial_scale: float = 1.0,
    sampling_ratio: int = 2, aligned: bool = False,
) -> Tensor:
    """``torchvision.ops.roi_align`` with a fixed ``sampling_ratio >= 1``, differentiable in ``rois`` too.

    ``input``: ``Tensor[N, C, H, W]``; ``rois``: ``Tensor[K, 5]`` ``(n, x1, y1, x2, y2)`` or a list of
    ``Tensor[L, 4]``. Returns ``Tensor[K, C, kh, kw]``, equal to torchvision's forward (see the module for the rules).
    """
    if isinstance(sampling_ratio, bool) or not isinstance(sampling_ratio, int) or sampling_ratio < 1:
        raise ValueError(f"sampling_ratio={sampling_ratio!r}: the reference needs a fixed number of samples per bin "
                         "side (an int >= 1); torchvision's adaptive count (<= 0) depends on the box in steps")
    rois, kh, kw = check_pooling_arguments(input, rois, output_size, spatial_scale, False, "roi_align_reference")
    n_images, channels, height, width = input.shape
    rois = rois.to(input.dtype)
    shift = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (rois[:, 1:] * spatial_scale - shift).unbind(dim=1)
    roi_width, roi_height = x2 - x1, y2 - y1
    if not aligned:  # torchvision stretches RoIs smaller than one cell to one cell
        roi_width, roi_height = roi_width.clamp(min=1.0), roi_height.clamp(min=1.0)
    columns = _axis_weights(x1, roi_width, kw, sampling_ratio, width)      # [K, kw, n, W]
    rows = _axis_weights(y1, roi_height, kh, sampling_ratio, height)       # [K, kh, n, H]
    batch_index = rois[:, 0].detach().long()
    output = input.new_zeros(rois.shape[0], channels, kh, kw)
    for n in batch_index.unique().tolist():
        if not 0 <= n < n_images:
            continue
        mine = batch_index == n
        across = torch.einsum("kwsx,cyx->kcwy", columns[mine], input[n])
        output[mine] = torch.einsum("khty,kcwy->kchw", rows[mine], across) / (sampling_ratio * sampling_ratio)
    return output
