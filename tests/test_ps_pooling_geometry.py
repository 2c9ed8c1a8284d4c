"""sodlib.ops.position_sensitive and sodlib.viz.position_sensitive: the poolings by name, where their bins read,
the voted scores along a shift, the explorer's view and the score-map grid."""
from __future__ import annotations

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from sodlib.models.box_refinement import part_score_maps  # noqa: E402
from sodlib.ops import POOLINGS, effective_bin_centres, position_sensitive_vote, ps_pool  # noqa: E402
from sodlib.ops.roi_pool_geometry import exact_bins_in_pixels  # noqa: E402
from sodlib.viz.position_sensitive import (  # noqa: E402
    bin_misalignment_px, plot_misalignment_by_pooling, plot_score_map_grid, ps_pooling_explorer_view, voted_scores)

STRIDE = 16
FEATURES = (24, 24)


def random_boxes(count: int, seed: int = 0, low: float = 4.0, high: float = 96.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    sides = low + (high - low) * torch.rand(count, 2, generator=generator, dtype=torch.float64)
    corners = 40 + 150 * torch.rand(count, 2, generator=generator, dtype=torch.float64)
    return torch.cat([corners, corners + sides], dim=1)


def rois_of(boxes: torch.Tensor) -> torch.Tensor:
    return torch.cat([boxes.new_zeros(len(boxes), 1), boxes], dim=1)


def exact_centres(boxes: torch.Tensor, k: int) -> torch.Tensor:
    bins = exact_bins_in_pixels(rois_of(boxes), (k, k))
    return torch.stack([(bins[..., 0] + bins[..., 2]) / 2, (bins[..., 1] + bins[..., 3]) / 2], dim=-1)


@pytest.mark.parametrize("pooling", ["ps_prroi", "ps_roi_align"])
@pytest.mark.parametrize("k", [1, 3, 7])
def test_the_exact_poolings_read_each_bin_at_its_centre(pooling, k):
    boxes = random_boxes(40, seed=k)
    measured = effective_bin_centres(rois_of(boxes), k, STRIDE, FEATURES, pooling)
    assert measured.shape == (40, k, k, 2)
    torch.testing.assert_close(measured, exact_centres(boxes, k), rtol=0, atol=1e-9)
    assert bin_misalignment_px(boxes, k, STRIDE, FEATURES, pooling).max() < 1e-9


def test_ps_roi_pooling_reads_whole_cells_in_a_staircase():
    boxes = random_boxes(60, seed=3)
    measured = effective_bin_centres(rois_of(boxes), 7, STRIDE, FEATURES, "ps_roi_pool")
    # the mean of whole cells' image points lies on the half-cell lattice
    half_cells = measured / (STRIDE / 2)
    torch.testing.assert_close(half_cells, half_cells.round(), rtol=0, atol=1e-9)
    # a small RoI's bins are off by a good part of a cell, far more than the exact poolings' none
    small = torch.tensor([[100.0, 100.0, 116.0, 116.0]], dtype=torch.float64)
    assert bin_misalignment_px(small, 7, STRIDE, FEATURES, "ps_roi_pool").max() > STRIDE / 4
    # moving a RoI by sub-pixel steps changes nothing until a rounding boundary is crossed: a staircase
    shifts = torch.arange(0, 16, 0.25, dtype=torch.float64)
    moved = small.repeat(len(shifts), 1)
    moved[:, 0::2] += shifts[:, None]
    first_bin_x = effective_bin_centres(rois_of(moved), 7, STRIDE, FEATURES, "ps_roi_pool")[:, 0, 0, 0]
    steps = (first_bin_x[1:] != first_bin_x[:-1]).sum()
    assert 1 <= steps <= 2 and len(first_bin_x.unique()) <= 3


def test_ps_pool_by_name_matches_the_ops_and_refuses_an_unknown_name():
    maps = torch.randn(1, 9 * 2, 12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    rois = rois_of(random_boxes(5, seed=1, high=60.0) / 2)
    from sodlib.ops import ps_prroi_pool, ps_roi_align_pixel_convention, ps_roi_pool

    torch.testing.assert_close(ps_pool(maps, rois, 3, 1 / 8, "ps_prroi"), ps_prroi_pool(maps, rois, 3, 1 / 8))
    torch.testing.assert_close(ps_pool(maps, rois, 3, 1 / 8, "ps_roi_align", 4),
                               ps_roi_align_pixel_convention(maps, rois, 3, 1 / 8, 4))
    torch.testing.assert_close(ps_pool(maps, rois, 3, 1 / 8, "ps_roi_pool"), ps_roi_pool(maps, rois, 3, 1 / 8))
    with pytest.raises(ValueError, match="pooling='max' is unknown; choose one of ps_roi_pool, ps_roi_align, ps_prroi"):
        ps_pool(maps, rois, 3, 1 / 8, "max")


def test_voted_scores_are_the_mean_of_the_pooled_bins_and_peak_on_the_object():
    truth = torch.tensor([96.0, 96.0, 144.0, 144.0])
    maps = part_score_maps(truth, 3, (320, 320), STRIDE)
    for pooling in POOLINGS:
        direct = position_sensitive_vote(ps_pool(maps, rois_of(truth[None].double()), 3, 1 / STRIDE, pooling))[:, 0]
        torch.testing.assert_close(voted_scores(maps, truth[None], STRIDE, pooling), direct)
    shifted = torch.stack([truth + torch.tensor([d, 0.0, d, 0.0]) for d in (-24.0, -8.0, 0.0, 8.0, 24.0)])
    precise = voted_scores(maps, shifted, STRIDE, "ps_prroi")
    assert precise.argmax() == 2 and precise[2] > precise[0] and precise[2] > precise[4]
    with pytest.raises(ValueError, match="k\\^2 channels"):
        voted_scores(maps[:, :5], truth[None], STRIDE, "ps_prroi")


def test_the_explorer_view_reports_each_pooling_and_refuses_a_box_off_the_map():
    truth = (96.0, 96.0, 112.0, 112.0)  # a 16 px object: one cell at stride 16
    maps = part_score_maps(torch.tensor(truth), 7, (256, 256), STRIDE)
    figure, report = ps_pooling_explorer_view(maps, truth, shift_x=2.5, shift_y=-1.0, stride=STRIDE)
    assert set(report.scores) == set(POOLINGS) == set(report.worst_misalignment_px)
    assert report.box == pytest.approx((98.5, 95.0, 114.5, 111.0))
    assert report.worst_misalignment_px["ps_prroi"] < 1e-6 and report.worst_misalignment_px["ps_roi_pool"] > 1.0
    expected = voted_scores(maps, torch.tensor([report.box]), STRIDE, "ps_roi_align")[0]
    assert report.scores["ps_roi_align"] == pytest.approx(float(expected))
    assert "PS-PrRoI" in report.summary() and len(figure.axes) == 2
    # the plotted score curve of PS-PrRoI passes through the reported score at the current shift
    line = next(l for l in figure.axes[1].lines if l.get_label() == "PS-PrRoI")
    xs, ys = line.get_data()
    assert ys[list(xs).index(2.5)] == pytest.approx(report.scores["ps_prroi"])
    with pytest.raises(ValueError, match="leaves the map"):
        ps_pooling_explorer_view(maps, truth, shift_x=0.0, side=400.0)
    with pytest.raises(ValueError, match="side=-1.0 must be positive"):
        ps_pooling_explorer_view(maps, truth, side=-1.0)


def test_the_score_map_grid_shows_k_squared_maps_and_the_vote():
    truth = torch.tensor([96.0, 96.0, 160.0, 144.0])
    maps = part_score_maps(truth, 3, (320, 320), STRIDE)[0]
    figure = plot_score_map_grid(maps, truth.tolist(), STRIDE)
    assert len(figure.axes) == 9 + 2  # the maps, the pooled bins and their colour bar
    vote = float(position_sensitive_vote(ps_pool(maps[None].double(), rois_of(truth[None].double()), 3, 1 / STRIDE,
                                                 "ps_prroi"))[0, 0])
    assert f"{vote:.2f}" in figure.axes[9].get_title()
    sides = [8.0, 16.0, 32.0]
    figure = plot_misalignment_by_pooling(sides, {p: [1.0, 2.0, 3.0] for p in POOLINGS},
                                          {p: [2.0, 3.0, 4.0] for p in POOLINGS}, STRIDE, 7)
    assert len(figure.axes) == 2


def test_the_ps_pooling_explorer_widget_redraws_when_a_slider_moves():
    pytest.importorskip("ipywidgets")
    from sodlib.viz.widgets import ps_pooling_explorer

    truth = (96.0, 96.0, 112.0, 112.0)
    explorer = ps_pooling_explorer(part_score_maps(torch.tensor(truth), 7, (256, 256), STRIDE), truth)
    assert explorer.renders == 1
    first = explorer.report.scores["ps_roi_pool"]
    explorer.controls["shift_x"].value = 7.75
    assert explorer.renders == 2 and explorer.report.box[0] == pytest.approx(103.75)
    assert explorer.report.scores["ps_prroi"] != pytest.approx(first)
    explorer.controls["side"].value = 64.0
    assert explorer.renders == 3
