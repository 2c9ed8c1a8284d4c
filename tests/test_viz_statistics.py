"""Notebook 01's figures and table: built from sodlib.stats results, returned as Figures / text."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from sodlib.data.coco import coco_from_dict  # noqa: E402
from sodlib.stats import anchor_matching_statistics, size_statistics  # noqa: E402
from sodlib.viz import statistics as viz  # noqa: E402


@pytest.fixture
def coco(tiny_coco):
    return coco_from_dict(tiny_coco)


def test_size_shares_have_the_paper_layout(coco):
    shares = viz.size_shares(size_statistics(coco))
    assert set(shares) == {"objects", "images", "area"} == set(viz.KISANTAL_TABLE_2) & set(shares)
    # three non-crowd objects of areas 200, 1024, 600: 1024 is small AND medium (inclusive edges)
    assert shares["objects"]["small"] == pytest.approx(100.0)
    assert shares["objects"]["medium"] == pytest.approx(100.0 / 3)
    assert shares["images"]["small"] == pytest.approx(100.0)
    assert shares["area"]["small"] == pytest.approx(100.0)


def test_paper_table_is_kisantal_table_2():
    paper = viz.KISANTAL_TABLE_2
    assert paper["objects"] == {"small": 41.43, "medium": 34.32, "large": 24.24}
    assert paper["mean_best_iou"] == {"small": 0.29, "medium": 0.57, "large": 0.66}
    assert viz.R16_MEAN_BEST_IOU[16] == 0.25


def test_table_beside_paper_has_two_rows_per_bin(coco):
    sizes, matching = size_statistics(coco), anchor_matching_statistics(coco)
    text = viz.table_beside_paper(sizes, matching, label="tiny")
    lines = text.splitlines()
    assert len(lines) == 2 + 2 * 3
    assert "mean max IoU" in lines[0] and lines[2].startswith("small") and "tiny" in lines[2]
    assert "41.43" in lines[3] and "0.29" in lines[3]
    assert "anchors/object" not in viz.table_beside_paper(sizes).splitlines()[0]


def test_every_figure_is_a_figure(coco):
    sizes, matching = size_statistics(coco), anchor_matching_statistics(coco)
    rng = np.random.default_rng(0)
    sides = np.exp(rng.uniform(np.log(3), np.log(300), 500))
    figures = [
        viz.plot_side_histogram({"random": sides, "tiny": np.sqrt(matching.areas)}),
        viz.plot_share_bars({"tiny": viz.size_shares(sizes), "paper": viz.KISANTAL_TABLE_2}),
        viz.plot_best_iou_vs_side({"tiny": (np.sqrt(matching.areas), matching.best_iou), "random": (sides, rng.uniform(0, 1, 500))}),
        viz.plot_category_small_share(sizes, min_objects=1),
    ]
    for figure in figures:
        assert isinstance(figure, Figure) and figure.axes
    # the histogram's edge lines sit at 32 and 96 px, on a log axis
    ax = figures[0].axes[0]
    assert ax.get_xscale() == "log"
    assert {32.0, 96.0} <= {line.get_xdata()[0] for line in ax.get_lines()}
    # three share panels, one bar per bin and source
    assert len(figures[1].axes) == 3 and len(figures[1].axes[0].patches) == 3 * 2
    plt.close("all")


def test_histogram_heights_are_percent_of_objects():
    figure = viz.plot_side_histogram({"a": [10.0, 10.0, 50.0, 200.0]}, bins_per_octave=1)
    heights = [p for p in figure.axes[0].patches if p.get_label() == "a (4 objects)"]
    assert heights, "one step patch per source"
    values = heights[0].get_data()[0]
    assert values.sum() == pytest.approx(100.0) and values.max() == pytest.approx(50.0)
    plt.close("all")


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="no positive side"):
        viz.plot_side_histogram({"a": [0.0]})
    with pytest.raises(ValueError, match="shares is empty"):
        viz.plot_share_bars({})
