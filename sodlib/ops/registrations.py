"""Fake (meta) kernels of the compiled ops, registered from Python.

The fake kernels give output shapes without computing, so ``torch.compile`` and ``torch.library.opcheck``
can trace the ops. The autograd formula is compiled with the ops (``extensions/prroi/csrc/prroi_pool_autograd.cpp``):
it routes the backward pass to ``prroi_pool_backward_input`` (features) and ``prroi_pool_backward_rois``
(RoI coordinates, Zhang et al. 2021, eq. 7), each run only when that input needs a gradient; first order only (no
double backward). Imported by :mod:`sodlib.ops` when the extension has loaded.
"""
from __future__ import annotations

import torch
from torch import Tensor

FORWARD = "sodlib::prroi_pool_forward"
BACKWARD_INPUT = "sodlib::prroi_pool_backward_input"
BACKWARD_ROIS = "sodlib::prroi_pool_backward_rois"


@torch.library.register_fake(FORWARD)
def _forward_fake(
    input: Tensor, rois: Tensor, spatial_scale: float, pooled_height: int, pooled_width: int, position_sensitive: bool
) -> Tensor:
    torch._check(input.dim() == 4, lambda: "input must be Tensor[N, C, H, W]")
    torch._check(rois.dim() == 2 and rois.shape[1] == 5, lambda: "rois must be Tensor[K, 5]")
    channels = input.shape[1] // (pooled_height * pooled_width) if position_sensitive else input.shape[1]
    return input.new_empty((rois.shape[0], channels, pooled_height, pooled_width))


@torch.library.register_fake(BACKWARD_INPUT)
def _backward_input_fake(
    grad_output: Tensor, rois: Tensor, spatial_scale: float, pooled_height: int, pooled_width: int,
    position_sensitive: bool, batch_size: int, channels: int, height: int, width: int,
) -> Tensor:
    return grad_output.new_empty((batch_size, channels, height, width))


@torch.library.register_fake(BACKWARD_ROIS)
def _backward_rois_fake(
    grad_output: Tensor, input: Tensor, rois: Tensor, output: Tensor, spatial_scale: float, pooled_height: int,
    pooled_width: int, position_sensitive: bool,
) -> Tensor:
    return rois.new_empty(rois.shape)
