"""An RPN anchor generator that follows sodlib's anchor conventions, for torchvision's detection models.

torchvision's ``AnchorGenerator`` rounds its base anchors to whole pixels and puts anchor centres at
``i * stride``. At the sizes that matter for small objects the rounding is not harmless: size 8 at ratio
0.5 becomes 12 x 6 instead of 11.31 x 5.66 (12.5 % more area). :class:`SodlibAnchorGenerator` is a drop-in
subclass whose base anchors come from :func:`sodlib.anchors.base_anchors` (``w = s / sqrt(r)``,
``h = s * sqrt(r)`` for size ``s = sqrt(area)`` and ratio ``r = h / w``, unrounded) and whose centres sit at
``(i + offset) * stride`` with an explicit ``offset`` (0, torchvision's placement, by default; 0.5 for the
centre of the stride cell). Its anchors for an image equal :meth:`sodlib.anchors.AnchorSet.anchors_for_image`
of the same sizes, ratios, strides and offset, in the same order (level, row, column, base anchor).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor
from torchvision.models.detection.anchor_utils import AnchorGenerator

from sodlib.anchors import AnchorSet, base_anchors

__all__ = ["SodlibAnchorGenerator", "anchor_generator_from_set"]


class SodlibAnchorGenerator(AnchorGenerator):
    """Unrounded anchors (sodlib conventions) in torchvision's ``AnchorGenerator`` interface.

    Args:
        sizes: ``sizes[l]`` are the anchor sizes ``sqrt(w * h)`` (pixels of the model's resized input) of
            feature level ``l``.
        aspect_ratios: ``h / w`` per level (``aspect_ratios[l]``), or one tuple used for every level.
        offset: anchor centres at ``(i + offset) * stride``, ``0 <= offset < 1``.

    ``forward(image_list, feature_maps)`` returns one ``Tensor[A_total, 4]`` per image, boxes
    ``(x1, y1, x2, y2)``; level ``l`` contributes ``H_l * W_l * len(aspect_ratios[l]) * len(sizes[l])``
    anchors. The stride of a level is ``padded_image_side // feature_side``, as torchvision computes it.
    """

    def __init__(self, sizes: Sequence[Sequence[float]], aspect_ratios: Sequence[float] | Sequence[Sequence[float]] = (0.5, 1.0, 2.0),
                 offset: float = 0.0):
        sizes = tuple(tuple(float(s) for s in level) for level in sizes)
        if aspect_ratios and not isinstance(aspect_ratios[0], (list, tuple)):
            aspect_ratios = (tuple(aspect_ratios),) * len(sizes)
        aspect_ratios = tuple(tuple(float(r) for r in level) for level in aspect_ratios)
        if len(aspect_ratios) != len(sizes):
            raise ValueError(f"aspect_ratios has {len(aspect_ratios)} levels but sizes has {len(sizes)}; "
                             "fix: give one tuple of ratios per level, or one tuple for all levels")
        # validates offset the same way AnchorSet does
        AnchorSet(strides=tuple(float(2 ** i) for i in range(len(sizes))), sizes=sizes,
                  aspect_ratios=aspect_ratios[0], offset=offset)
        self.offset = float(offset)
        super().__init__(sizes, aspect_ratios)

    def generate_anchors(self, scales: Sequence[float], aspect_ratios: Sequence[float],
                         dtype: torch.dtype = torch.float32, device: torch.device = torch.device("cpu")) -> Tensor:
        """``Tensor[len(aspect_ratios) * len(scales), 4]`` base anchors centred at the origin, unrounded."""
        return torch.as_tensor(base_anchors(scales, aspect_ratios), dtype=dtype, device=device)

    def grid_anchors(self, grid_sizes: list[list[int]], strides: list[list[Tensor]]) -> list[Tensor]:
        """One ``Tensor[H_l * W_l * A_l, 4]`` per level: base anchors shifted to ``(i + offset) * stride``."""
        anchors = []
        for (grid_height, grid_width), (stride_y, stride_x), cell in zip(grid_sizes, strides, self.cell_anchors):
            device, dtype = cell.device, cell.dtype
            stride_x, stride_y = float(stride_x), float(stride_y)
            shifts_x = (torch.arange(grid_width, dtype=torch.float64, device=device) + self.offset) * stride_x
            shifts_y = (torch.arange(grid_height, dtype=torch.float64, device=device) + self.offset) * stride_y
            shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
            shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
            shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
            level = shifts.view(-1, 1, 4) + cell.to(torch.float64).view(1, -1, 4)
            anchors.append(level.reshape(-1, 4).to(dtype))
        return anchors


def anchor_generator_from_set(anchor_set: AnchorSet) -> SodlibAnchorGenerator:
    """The generator of an :class:`sodlib.anchors.AnchorSet` (its sizes, ratios and offset; the strides come
    from the backbone's feature maps, so they must match ``anchor_set.strides``)."""
    return SodlibAnchorGenerator(anchor_set.sizes, anchor_set.aspect_ratios, anchor_set.offset)
