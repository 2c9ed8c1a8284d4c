"""Argument checks and RoI formatting shared by the pooling ops and their references.

Every check runs before any work starts and names the argument and the fix. Value checks that would
force a GPU to synchronise (batch indices of CUDA RoIs) run only for CPU tensors, and no value check
runs while ``torch.compile`` traces.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

RoIs = Tensor | Sequence[Tensor]
REDUCED_PRECISION = (torch.float16, torch.bfloat16)


def pooled_size(output_size: int | Sequence[int]) -> tuple[int, int]:
    """``output_size`` as ``(kh, kw)``: an int ``k`` means ``(k, k)``; both must be positive ints."""
    if isinstance(output_size, bool):
        raise TypeError(f"output_size must be an int or a pair of ints (kh, kw), got {output_size!r}")
    if isinstance(output_size, int):
        output_size = (output_size, output_size)
    try:
        kh, kw = output_size
    except (TypeError, ValueError):
        raise TypeError(f"output_size must be an int or a pair of ints (kh, kw), got {output_size!r}") from None
    for name, value in (("kh", kh), ("kw", kw)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"output_size {name} must be an int, got {value!r}; write for instance output_size=(7, 7)")
        if value <= 0:
            raise ValueError(f"output_size must be positive, got {tuple(output_size)}; use for instance (7, 7)")
    return kh, kw


def rois_from_boxes(boxes: Sequence[Tensor]) -> Tensor:
    """A list of per-image boxes ``[Tensor[L_n, 4]]`` as ``Tensor[sum L_n, 5]`` rows ``(n, x1, y1, x2, y2)``."""
    rows = []
    for n, image_boxes in enumerate(boxes):
        if not isinstance(image_boxes, Tensor) or image_boxes.dim() != 2 or image_boxes.shape[1] != 4:
            shape = tuple(image_boxes.shape) if isinstance(image_boxes, Tensor) else type(image_boxes).__name__
            raise ValueError(f"rois[{n}] must be Tensor[L, 4] boxes (x1, y1, x2, y2) of image {n}, got {shape}")
        index = torch.full_like(image_boxes[:, :1], n)
        rows.append(torch.cat([index, image_boxes], dim=1))
    if not rows:
        raise ValueError("rois is an empty list; pass one Tensor[L, 4] per image (L may be 0)")
    return torch.cat(rows, dim=0)


def check_pooling_arguments(
    input: Tensor,
    rois: RoIs,
    output_size: int | Sequence[int],
    spatial_scale: float,
    position_sensitive: bool,
    op_name: str,
    check_values: bool = True,
) -> tuple[Tensor, int, int]:
    """Validate the arguments of ``op_name`` and return ``(rois as Tensor[K, 5], kh, kw)``; with
    ``check_values=False`` the values of ``rois`` (batch indices, finite coordinates) are left to the caller
    (:func:`check_roi_values`).

    Raises ``TypeError`` / ``ValueError`` naming the argument and the fix.
    """
    if not isinstance(input, Tensor):
        raise TypeError(f"{op_name}: input must be a Tensor[N, C, H, W], got {type(input).__name__}")
    if input.dim() != 4:
        hint = " (one feature map? use input[None])" if input.dim() == 3 else ""
        raise ValueError(f"{op_name}: input must be Tensor[N, C, H, W], got shape {tuple(input.shape)}{hint}")
    if not input.is_floating_point():
        raise TypeError(f"{op_name}: input must be floating point, got {input.dtype}; convert with input.float()")
    kh, kw = pooled_size(output_size)
    if isinstance(spatial_scale, bool) or not isinstance(spatial_scale, (int, float)):
        raise TypeError(f"{op_name}: spatial_scale must be a float (feature size / image size), got {spatial_scale!r}")
    if not math.isfinite(spatial_scale) or spatial_scale <= 0:
        raise ValueError(f"{op_name}: spatial_scale must be positive and finite, got {spatial_scale}; "
                         "for a stride-16 map use 1 / 16")
    if position_sensitive and input.shape[1] % (kh * kw) != 0:
        raise ValueError(
            f"{op_name}: input has {input.shape[1]} channels, which is not a multiple of kh * kw = {kh * kw}; "
            f"position-sensitive pooling needs C = C_out * kh * kw channels")

    if isinstance(rois, (list, tuple)):
        if len(rois) > input.shape[0]:
            raise ValueError(f"{op_name}: rois lists boxes for {len(rois)} images but input has a batch of "
                             f"{input.shape[0]}; pass one Tensor[L, 4] per image")
        rois = rois_from_boxes(rois)
    if not isinstance(rois, Tensor):
        raise TypeError(f"{op_name}: rois must be Tensor[K, 5] or a list of Tensor[L, 4], got {type(rois).__name__}")
    if rois.dim() != 2 or rois.shape[1] != 5:
        hint = "; for boxes without a batch index pass a list [boxes] per image" if rois.dim() == 2 and rois.shape[1] == 4 else ""
        raise ValueError(f"{op_name}: rois must be Tensor[K, 5] rows (batch_index, x1, y1, x2, y2), "
                         f"got shape {tuple(rois.shape)}{hint}")
    if rois.device != input.device:
        raise ValueError(f"{op_name}: rois are on {rois.device} but input is on {input.device}; "
                         "move them with rois.to(input.device)")
    allowed = (input.dtype, torch.float32) if input.dtype in REDUCED_PRECISION else (input.dtype,)
    if rois.dtype not in allowed:
        raise TypeError(f"{op_name}: rois are {rois.dtype} but input is {input.dtype}; convert with "
                        f"rois.to(input.dtype)" + (" or keep rois float32" if len(allowed) > 1 else ""))
    if check_values:
        check_roi_values(input, rois, op_name)
    return rois, kh, kw


def check_roi_values(input: Tensor, rois: Tensor, op_name: str) -> None:
    """Raise ``ValueError`` unless every ``rois[:, 0]`` is an integer in ``[0, N)`` and every ``rois[:, 1:]`` is
    finite, for CPU RoIs outside ``torch.compile`` (the compiled CPU kernel does the same checks itself, in one
    pass). A NaN or infinite box (a diverging box regression) would pool zeros with a zero gradient."""
    if rois.device.type == "cpu" and rois.numel() and not torch.compiler.is_compiling():
        batch_index = rois[:, 0].detach()
        # an index is valid if it equals itself rounded down and clamped into [0, N - 1] (NaN never does)
        if not bool((batch_index == batch_index.trunc().clamp_(0, input.shape[0] - 1)).all()):
            raise ValueError(f"{op_name}: rois[:, 0] must hold integer batch indices in [0, {input.shape[0]}), "
                             f"got {batch_index.unique().tolist()[:8]}")
        finite = torch.isfinite(rois[:, 1:].detach()).all(dim=1)
        if not bool(finite.all()):
            row = int((~finite).nonzero()[0, 0])
            raise ValueError(f"{op_name}: rois[:, 1:] must be finite box coordinates, got {rois[row, 1:].tolist()} in "
                             f"row {row} (a diverging box regression?)")
