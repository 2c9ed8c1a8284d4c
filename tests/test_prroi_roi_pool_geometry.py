"""RoIPool's quantised bins as computed by sodlib.ops.roi_pool_geometry match torchvision's roi_pool itself."""
from __future__ import annotations

import torch

from sodlib.ops import roi_pool
from sodlib.ops.roi_pool_geometry import (
    bin_misalignment_px,
    exact_bins_in_pixels,
    roi_pool_cells,
    round_half_away_from_zero,
)


def test_round_half_away_from_zero_is_c_round() -> None:
    values = torch.tensor([2.5, -2.5, 1.49, -0.5, 0.5, 3.0])
    assert round_half_away_from_zero(values).tolist() == [3.0, -3.0, 1.0, -1.0, 1.0, 3.0]


def test_cells_match_torchvision_roi_pool() -> None:
    """Max-pooling maps whose values are the column (row) index, and minus it, reveals each bin's
    first and last cell."""
    height, width, stride = 20, 24, 16
    rows, columns = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                                   indexing="ij")
    maps = torch.stack([columns, rows, -columns, -rows])[None]
    g = torch.Generator().manual_seed(0)
    corner = torch.rand(200, 2, generator=g, dtype=torch.float64) * torch.tensor([width, height]) * stride
    side = 1 + torch.rand(200, 2, generator=g, dtype=torch.float64) * 150
    corner[:50] = torch.round(corner[:50] / 8) * 8  # include exact halves of a cell: rounding ties
    rois = torch.cat([torch.zeros(200, 1, dtype=torch.float64), corner - 20, corner + side], dim=1)
    pooled = roi_pool(maps, rois, (7, 5), 1 / stride)                # [K, 4, 7, 5]
    cells = roi_pool_cells(rois, (7, 5), 1 / stride, (height, width))  # [K, 7, 5, 4]
    nonempty = (cells[..., 2] > cells[..., 0]) & (cells[..., 3] > cells[..., 1])
    assert nonempty.float().mean() > 0.7
    assert torch.equal(pooled[:, 0][nonempty], (cells[..., 2] - 1)[nonempty].double())  # last column
    assert torch.equal(pooled[:, 1][nonempty], (cells[..., 3] - 1)[nonempty].double())  # last row
    assert torch.equal(-pooled[:, 2][nonempty], cells[..., 0][nonempty].double())       # first column
    assert torch.equal(-pooled[:, 3][nonempty], cells[..., 1][nonempty].double())       # first row
    assert (pooled[:, 0][~nonempty] == 0).all()  # empty bins pool 0


def test_exact_bins_tile_the_roi_and_hand_computed_misalignment() -> None:
    rois = torch.tensor([[0, 8.0, 24.0, 120.0, 136.0]], dtype=torch.float64)
    bins = exact_bins_in_pixels(rois, (7, 7))
    assert bins[0, 0, 0, :2].tolist() == [8.0, 24.0] and torch.allclose(bins[0, -1, -1, 2:], rois[0, 3:])
    # 112 px at stride 16: cells 0..7 (8 cells, end inclusive); bin j takes cells [floor(8j/7), ceil(8(j+1)/7)),
    # two cells (32 px) for a 16 px bin, but centred where the exact bin is
    grid = torch.tensor([[0, 0.0, 0.0, 112.0, 112.0]], dtype=torch.float64)
    assert bin_misalignment_px(grid, (7, 7), 1 / 16, (40, 40)).abs().max() < 1e-9
    assert roi_pool_cells(grid, (7, 7), 1 / 16, (40, 40))[0, 0, :, 0].tolist() == [0, 1, 2, 3, 4, 5, 6]
    # a 24 px object at (20, 20): x * scale = 1.25 .. 2.75 rounds to cells 1..3; bin 0 is cell 1 (centre 16 px)
    # while the exact bin 0 is [20, 20 + 24/7] (centre 21.71 px): 5.71 px off along each axis
    small = torch.tensor([[0, 20.0, 20.0, 44.0, 44.0]], dtype=torch.float64)
    offset = bin_misalignment_px(small, (7, 7), 1 / 16, (40, 40))[0, 0, 0]
    assert abs(offset - (20 + 12 / 7 - 16) * 2 ** 0.5) < 1e-9
