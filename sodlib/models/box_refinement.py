r"""Refining a box by gradient ascent on a score pooled with PS-PrRoI pooling.

Because precise RoI pooling is differentiable in the box coordinates, any score computed from pooled
features can be climbed by moving the box. IoU-Net (Jiang et al., 2018) refines detections this way with a
learned IoU predictor; here the score is the voting step of R-FCN (Zhang et al., 2021, eq. 8): the mean over the
k x k bins of the position-sensitive pooled maps,

.. math::
    s(b) = \frac{1}{k^2} \sum_{i,j} \mathrm{PSPrPool}_{ij}(b, F),

and each step moves every edge by its gradient scaled with the box size (as IoU-Net does, so that small
and large boxes move alike):

.. math::
    x_1 \leftarrow x_1 + \eta\, w\, \partial s / \partial x_1, \quad
    y_1 \leftarrow y_1 + \eta\, h\, \partial s / \partial y_1, \ \dots

RoIPool's and RoIAlign's outputs give no gradient with respect to the box, so neither can do this.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from sodlib.ops.position_sensitive import position_sensitive_vote
from sodlib.ops.prroi import ps_prroi_pool


def part_score_maps(box: Tensor, parts: int, image_size: tuple[int, int], stride: int) -> Tensor:
    """Ideal position-sensitive score maps of one object: ``Tensor[1, parts**2, H / stride, W / stride]``.

    Channel ``(i, j)`` (index ``i * parts + j``) holds, for each feature cell (the ``stride x stride`` square
    around the image point ``(stride * col, stride * row)``), twice the fraction of the cell inside part
    ``(i, j)`` of ``box`` minus the fraction inside the whole box: +1 on its own part, -1 on the object's
    other parts, 0 on background. A trained R-FCN aims for maps of this kind.
    ``box``: ``Tensor[4]`` ``(x1, y1, x2, y2)`` in image pixels; ``image_size``: ``(height, width)``.
    """
    height, width = image_size[0] // stride, image_size[1] // stride
    rows = torch.arange(height, dtype=torch.float64)[:, None] * stride
    cols = torch.arange(width, dtype=torch.float64)[None, :] * stride

    def cell_fraction_inside(x1: float, y1: float, x2: float, y2: float) -> Tensor:
        inside_x = ((cols + stride / 2).clamp(max=x2) - (cols - stride / 2).clamp(min=x1)).clamp(min=0) / stride
        inside_y = ((rows + stride / 2).clamp(max=y2) - (rows - stride / 2).clamp(min=y1)).clamp(min=0) / stride
        return inside_x * inside_y

    x1, y1, x2, y2 = box.double().tolist()
    whole = cell_fraction_inside(x1, y1, x2, y2)
    part_w, part_h = (x2 - x1) / parts, (y2 - y1) / parts
    maps = [2 * cell_fraction_inside(x1 + j * part_w, y1 + i * part_h, x1 + (j + 1) * part_w, y1 + (i + 1) * part_h)
            - whole for i in range(parts) for j in range(parts)]
    return torch.stack(maps)[None]


def pooled_part_score(score_maps: Tensor, box: Tensor, parts: int, spatial_scale: float) -> Tensor:
    """R-FCN's vote: the mean of ``ps_prroi_pool(score_maps, box)`` over its ``parts x parts`` bins (a scalar).

    ``score_maps``: ``Tensor[1, parts**2, H, W]``; ``box``: ``Tensor[4]`` in image pixels.
    """
    rois = torch.cat([box.new_zeros(1), box])[None]
    return position_sensitive_vote(ps_prroi_pool(score_maps, rois, parts, spatial_scale))[0, 0]


def refine_box(score: Callable[[Tensor], Tensor], box: Tensor, steps: int, step_size: float) -> Tensor:
    """Gradient ascent on ``score(box)`` with size-scaled steps; returns the path ``Tensor[steps + 1, 4]``.

    Each step: ``box += step_size * (w, h, w, h) * d score / d box``.
    """
    if steps < 0 or step_size <= 0:
        raise ValueError(f"steps must be >= 0 and step_size > 0, got steps={steps}, step_size={step_size}")
    path = [box.detach().clone()]
    current = box.detach().clone()
    for _ in range(steps):
        current.requires_grad_(True)
        (gradient,) = torch.autograd.grad(score(current), current)
        with torch.no_grad():
            size = torch.stack([current[2] - current[0], current[3] - current[1]]).repeat(2)
            current = current + step_size * size * gradient
        path.append(current.clone())
    return torch.stack(path)
