r"""Feature-distillation losses: EFPN's foreground-background-balanced loss (Deng et al., 2021, eqs. 6-8).

A feature map ``F`` of the student is pulled towards the teacher's ``F^t`` (the same FPN level computed from the
2x input) by

.. math::
    L_{glob} = \frac{1}{B H W C} \sum_{b, x, y, c} |F^t - F|, \qquad
    L_{pos} = \frac{1}{N C} \sum_{(b, x, y) \in P_{pos}} \sum_c |F^t - F|, \qquad
    L_{fbb} = L_{glob} + \lambda L_{pos},

where ``P_pos`` are the feature cells that ground-truth boxes cover and ``N`` their number over the batch (a cell
under two boxes counts once). The paper writes both terms as L1 norms without saying how they are normalised;
sodlib takes the mean absolute error per element in both, so that the two terms have the same scale whatever
the number of channels and ``lambda`` alone weighs them. Small objects are a sliver of the map, so the global
term alone barely sees them; the positive term gives their cells the weight of the whole background.

A box ``(x1, y1, x2, y2)`` in image pixels covers cell ``(i, j)`` of a stride-``s`` map when the cell's square
``[j s, (j + 1) s) x [i s, (i + 1) s)`` overlaps it: columns ``floor(x1 / s)`` to ``ceil(x2 / s) - 1``, clipped to
the map, so even a box smaller than one cell covers at least one.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["box_cell_mask", "fbb_loss", "feature_error_by_region"]


def box_cell_mask(boxes: Sequence[Tensor], height: int, width: int, stride: float = 1.0) -> Tensor:
    """``Tensor[B, H, W]`` bool: the cells of a ``height x width`` map of ``stride`` that the boxes of each image
    cover (``boxes[b]``: ``Tensor[N_b, 4]`` xyxy in image pixels; ``N_b`` may be 0)."""
    if not stride > 0:
        raise ValueError(f"stride={stride!r} must be positive (image pixels per feature cell)")
    device = boxes[0].device if len(boxes) else torch.device("cpu")
    mask = torch.zeros(len(boxes), height, width, dtype=torch.bool, device=device)
    for index, image_boxes in enumerate(boxes):
        if image_boxes.ndim != 2 or image_boxes.shape[-1] != 4:
            raise ValueError(f"boxes[{index}] has shape {tuple(image_boxes.shape)}; expected [N, 4] xyxy pixels")
        for x1, y1, x2, y2 in image_boxes.detach().to("cpu", torch.float64).tolist():
            if not (x2 > x1 and y2 > y1):
                continue
            left, top = max(math.floor(x1 / stride), 0), max(math.floor(y1 / stride), 0)
            right, bottom = min(math.ceil(x2 / stride), width), min(math.ceil(y2 / stride), height)
            if right > left and bottom > top:
                mask[index, top:bottom, left:right] = True
    return mask


def _check_pair(student: Tensor, teacher: Tensor, boxes: Sequence[Tensor]) -> None:
    if student.ndim != 4 or student.shape != teacher.shape:
        raise ValueError(f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} must be maps of one shape "
                         "[B, C, H, W]; fix: take the teacher's level that has the student's resolution")
    if len(boxes) != student.shape[0]:
        raise ValueError(f"boxes holds {len(boxes)} images but the maps hold {student.shape[0]}")


def fbb_loss(student: Tensor, teacher: Tensor, boxes: Sequence[Tensor], lam: float = 1.0, *,
             stride: float = 1.0) -> Tensor:
    """The foreground-background-balanced loss ``L_glob + lam * L_pos`` (module docstring), a scalar.

    Args:
        student, teacher: ``Tensor[B, C, H, W]``; the teacher is not differentiated (``detach``).
        boxes: per image ``Tensor[N_b, 4]`` xyxy ground-truth boxes in image pixels.
        lam: weight of the positive term, ``>= 0`` (0: the global L1 alone; the paper uses 1).
        stride: image pixels per feature cell of these maps (boxes are divided by it).

    A batch without any box has ``L_pos = 0``.
    """
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not math.isfinite(lam) or lam < 0:
        raise ValueError(f"lam={lam!r} must be a number >= 0 (the weight of the loss on object pixels; the paper uses 1)")
    _check_pair(student, teacher, boxes)
    error = (student - teacher.detach()).abs()
    loss = error.mean()
    if lam > 0:
        mask = box_cell_mask(boxes, student.shape[-2], student.shape[-1], stride)
        count = int(mask.sum())
        if count:
            loss = loss + lam * error.permute(0, 2, 3, 1)[mask].mean()
    return loss


def feature_error_by_region(student: Tensor, teacher: Tensor, boxes: Sequence[Tensor], *,
                            stride: float = 1.0) -> dict[str, float]:
    """Mean absolute feature error on the cells that boxes cover and on the rest:
    ``{"object": ..., "background": ..., "object_cells": n, "background_cells": m}`` (NaN for an empty region)."""
    _check_pair(student, teacher, boxes)
    with torch.no_grad():
        error = (student - teacher).abs().mean(dim=1)  # [B, H, W]
        mask = box_cell_mask(boxes, student.shape[-2], student.shape[-1], stride)
        objects, background = error[mask], error[~mask]
    return {"object": float(objects.mean()) if objects.numel() else float("nan"),
            "background": float(background.mean()) if background.numel() else float("nan"),
            "object_cells": int(objects.numel()), "background_cells": int(background.numel())}
