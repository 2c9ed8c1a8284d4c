r"""Precise RoI pooling (PrRoI) and its position-sensitive variant (PS-PrRoI): functions and modules.

Each output bin is the exact mean of the bilinearly interpolated feature map over the bin (Zhang et al., 2021,
eq. 5-6): no quantisation of the RoI (RoIPool) and no sampling points (RoIAlign). The output is
differentiable with respect to the features and to the RoI coordinates (eq. 7).

Conventions: feature pixel ``(i, j)`` sits at ``(x = j, y = i)`` (torchvision's ``roi_align`` with
``aligned=False``); RoIs are in image coordinates and multiplied by ``spatial_scale``.
The compiled kernels (``sodlib._C``) run on CPU and CUDA; without them the pure-PyTorch reference
(:mod:`sodlib.ops.prroi_reference`) runs instead, after one warning.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from sodlib.ops.arguments import RoIs, check_pooling_arguments, check_roi_values
from sodlib.ops.extension import use_compiled_kernel
from sodlib.ops.prroi_reference import pool_reference


def _pool(input: Tensor, rois: RoIs, output_size: int | Sequence[int], spatial_scale: float,
          position_sensitive: bool, op_name: str) -> Tensor:
    rois, kh, kw = check_pooling_arguments(input, rois, output_size, spatial_scale, position_sensitive, op_name,
                                           check_values=False)
    if use_compiled_kernel(input.device):
        # the CPU kernel checks the batch indices and coordinates before it pools (CUDA RoIs are not read back)
        return torch.ops.sodlib.prroi_pool_forward(input, rois, float(spatial_scale), kh, kw, position_sensitive)
    check_roi_values(input, rois, op_name)
    return pool_reference(input, rois, kh, kw, float(spatial_scale), position_sensitive)


def prroi_pool(input: Tensor, rois: RoIs, output_size: int | Sequence[int], spatial_scale: float = 1.0) -> Tensor:
    r"""Precise RoI pooling.

    .. math::
        \mathrm{out}[k, c, i, j] = \frac{1}{|b_{ij}|} \iint_{b_{ij}} f_c(x, y)\,dx\,dy,

    where ``b_ij`` is bin ``(i, j)`` of RoI ``k`` scaled by ``spatial_scale`` and ``f_c`` is channel ``c``
    of image ``rois[k, 0]``, bilinearly interpolated (zero beyond one pixel outside the map).

    Args:
        input: ``Tensor[N, C, H, W]`` feature maps, float16/bfloat16 (computed in float32), float32 or float64.
        rois: ``Tensor[K, 5]`` rows ``(batch_index, x1, y1, x2, y2)`` in image coordinates, or a list of
            ``Tensor[L_n, 4]`` boxes per image. Same dtype and device as ``input`` (float32 is also
            accepted for half inputs). Boxes with ``x2 <= x1`` or ``y2 <= y1`` pool 0.
        output_size: ``k`` or ``(kh, kw)`` bins.
        spatial_scale: feature-map size / image size, e.g. ``1 / 16`` for a stride-16 map.

    Returns:
        ``Tensor[K, C, kh, kw]``; gradients flow to ``input`` and to the RoI coordinates.
    """
    return _pool(input, rois, output_size, spatial_scale, False, "prroi_pool")


def ps_prroi_pool(input: Tensor, rois: RoIs, output_size: int | Sequence[int], spatial_scale: float = 1.0) -> Tensor:
    r"""Position-sensitive precise RoI pooling (R-FCN's score maps; Zhang et al., 2021).

    .. math::
        \mathrm{out}[k, c, i, j] = \frac{1}{|b_{ij}|} \iint_{b_{ij}} f_{(c k_h + i) k_w + j}(x, y)\,dx\,dy,

    i.e. bin ``(i, j)`` of output channel ``c`` reads its own input channel, in the layout of
    ``torchvision.ops.ps_roi_align``.

    Args:
        input: ``Tensor[N, C_out * kh * kw, H, W]`` position-sensitive score maps.
        rois, output_size, spatial_scale: as in :func:`prroi_pool`.

    Returns:
        ``Tensor[K, C_out, kh, kw]``.
    """
    return _pool(input, rois, output_size, spatial_scale, True, "ps_prroi_pool")


class PrRoIPool(nn.Module):
    """Module form of :func:`prroi_pool`: ``forward(input Tensor[N, C, H, W], rois) -> Tensor[K, C, kh, kw]``."""

    def __init__(self, output_size: int | Sequence[int], spatial_scale: float = 1.0) -> None:
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale

    def forward(self, input: Tensor, rois: RoIs) -> Tensor:
        return prroi_pool(input, rois, self.output_size, self.spatial_scale)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, spatial_scale={self.spatial_scale}"


class PSPrRoIPool(nn.Module):
    """Module form of :func:`ps_prroi_pool`: ``Tensor[N, C_out * kh * kw, H, W] -> Tensor[K, C_out, kh, kw]``."""

    def __init__(self, output_size: int | Sequence[int], spatial_scale: float = 1.0) -> None:
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale

    def forward(self, input: Tensor, rois: RoIs) -> Tensor:
        return ps_prroi_pool(input, rois, self.output_size, self.spatial_scale)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, spatial_scale={self.spatial_scale}"
