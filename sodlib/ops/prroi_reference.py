r"""Precise RoI pooling in plain PyTorch: the readable reference the compiled kernels are held to.

Feature pixel ``(i, j)`` sits at the point ``(x = j, y = i)``; bilinear interpolation makes the map
continuous (Zhang et al., 2021, eq. 5) and zero from one pixel outside it on:

.. math::
    f(x, y) = \sum_{i,j} \mathrm{hat}(x - j)\,\mathrm{hat}(y - i)\,w_{ij}, \qquad \mathrm{hat}(t) = \max(0, 1 - |t|).

A bin :math:`[x_1, x_2] \times [y_1, y_2]` pools the exact mean of ``f`` over it (eq. 6). The integral
factorises, pixel by pixel, into two one-dimensional integrals of the hat:

.. math::
    \mathrm{out} = \frac{1}{(x_2 - x_1)(y_2 - y_1)} \sum_{i,j} A(y_1, y_2; i)\, A(x_1, x_2; j)\, w_{ij},
    \qquad A(a, b; p) = H(b - p) - H(a - p),

with ``H`` the antiderivative of the hat. So pooling is two small matrix products per RoI: the
``[kh, H]`` row weights and the ``[kw, W]`` column weights around each feature map. Autograd
differentiates this with respect to the features and the RoI coordinates; the kernels use the same
closed form and hand-derived gradients (eq. 7), and the tests hold one to the other.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from sodlib.ops.arguments import RoIs, check_pooling_arguments


def hat_antiderivative(t: Tensor) -> Tensor:
    r"""``H(t) = \int_{-\infty}^t \max(0, 1 - |s|)\, ds``: 0, then ``(t + 1)^2 / 2``, then ``1 - (1 - t)^2 / 2``, then 1."""
    rising = 0.5 * (t + 1) ** 2
    falling = 1 - 0.5 * (1 - t) ** 2
    return torch.where(t <= -1, 0.0, torch.where(t <= 0, rising, torch.where(t < 1, falling, 1.0)))


def bin_pixel_weights(start: Tensor, length: Tensor, bins: int, size: int) -> Tensor:
    """Weights ``A(lo_b, hi_b; p)`` of pixels ``p = 0 .. size-1`` under bins ``b = 0 .. bins-1``.

    ``start``, ``length``: ``Tensor[K]``, the RoI's extent along one axis in feature coordinates; bin ``b``
    spans ``[start + b * length / bins, start + (b + 1) * length / bins]``. Returns ``Tensor[K, bins, size]``.
    """
    steps = torch.arange(bins + 1, device=start.device, dtype=start.dtype)
    edges = start[:, None] + steps * (length / bins)[:, None]                      # [K, bins + 1]
    pixels = torch.arange(size, device=start.device, dtype=start.dtype)
    antiderivative = hat_antiderivative(edges[:, :, None] - pixels)               # [K, bins + 1, size]
    return antiderivative[:, 1:] - antiderivative[:, :-1]


def pool_reference(
    input: Tensor, rois: Tensor, pooled_height: int, pooled_width: int, spatial_scale: float, position_sensitive: bool
) -> Tensor:
    """PrRoI / PS-PrRoI pooling of checked arguments.

    ``input``: ``Tensor[N, C, H, W]``; ``rois``: ``Tensor[K, 5]`` rows ``(n, x1, y1, x2, y2)`` in image
    coordinates. Returns ``Tensor[K, C', kh, kw]`` with ``C' = C``, or ``C / (kh * kw)`` when
    ``position_sensitive`` (output channel ``c`` at bin ``(i, j)`` reads input channel ``(c * kh + i) * kw + j``).
    Degenerate RoIs (``x2 <= x1`` or ``y2 <= y1``) and batch indices outside ``[0, N)`` pool 0.
    """
    if input.dtype in (torch.float16, torch.bfloat16):  # accumulate in float32, as the kernels do
        output = pool_reference(input.float(), rois.float(), pooled_height, pooled_width, spatial_scale, position_sensitive)
        return output.to(input.dtype)
    n_images, channels, height, width = input.shape
    out_channels = channels // (pooled_height * pooled_width) if position_sensitive else channels
    rois = rois.to(input.dtype)
    x1, y1, x2, y2 = (rois[:, 1:] * spatial_scale).unbind(dim=1)
    roi_width, roi_height = x2 - x1, y2 - y1
    batch_index = rois[:, 0].detach().long()
    valid = (roi_width > 0) & (roi_height > 0) & (batch_index >= 0) & (batch_index < n_images)

    column_weights = bin_pixel_weights(x1, roi_width, pooled_width, width)       # [K, kw, W]
    row_weights = bin_pixel_weights(y1, roi_height, pooled_height, height)       # [K, kh, H]
    bin_area = torch.where(valid, roi_width * roi_height / (pooled_width * pooled_height), 1.0)

    output = input.new_zeros(rois.shape[0], out_channels, pooled_height, pooled_width)
    for n in batch_index[valid].unique().tolist():
        mine = valid & (batch_index == n)
        if position_sensitive:
            maps = input[n].reshape(out_channels, pooled_height, pooled_width, height, width)
            columns = torch.einsum("kwx,chwyx->kchwy", column_weights[mine], maps)
            integral = torch.einsum("khy,kchwy->kchw", row_weights[mine], columns)
        else:
            columns = torch.einsum("kwx,cyx->kcwy", column_weights[mine], input[n])
            integral = torch.einsum("khy,kcwy->kchw", row_weights[mine], columns)
        output[mine] = integral / bin_area[mine, None, None, None]
    return output


def prroi_pool_reference(
    input: Tensor, rois: RoIs, output_size: int | Sequence[int], spatial_scale: float = 1.0
) -> Tensor:
    """Reference PrRoI pooling: ``Tensor[N, C, H, W]`` and RoIs -> ``Tensor[K, C, kh, kw]`` (see the module)."""
    rois, kh, kw = check_pooling_arguments(input, rois, output_size, spatial_scale, False, "prroi_pool_reference")
    return pool_reference(input, rois, kh, kw, spatial_scale, False)


def ps_prroi_pool_reference(
    input: Tensor, rois: RoIs, output_size: int | Sequence[int], spatial_scale: float = 1.0
) -> Tensor:
    """Reference PS-PrRoI pooling: ``Tensor[N, C_out * kh * kw, H, W]`` -> ``Tensor[K, C_out, kh, kw]``."""
    rois, kh, kw = check_pooling_arguments(input, rois, output_size, spatial_scale, True, "ps_prroi_pool_reference")
    return pool_reference(input, rois, kh, kw, spatial_scale, True)
