"""Notebook 07's level explorer: levels and cells against the FPN / EFPN formulas, anchors against brute force."""
from __future__ import annotations

import math
import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from sodlib.anchors import worst_case_iou  # noqa: E402
from sodlib.pyramid_levels import cells_covered, default_extended_threshold, efpn_level, fpn_level  # noqa: E402
from sodlib.viz import pyramid_levels as viz  # noqa: E402
from sodlib.viz import widgets as w  # noqa: E402

#: Denser anchor sets than the course's, so that some anchors do match worst-placed objects.
DENSE_FPN = ((10.0, 14.0, 20.0), (28.0, 40.0), (56.0, 80.0), (112.0, 160.0), (224.0, 320.0))
DENSE_EXTENDED = (5.0, 7.0)


def test_a_tiny_object_goes_to_p2_in_fpn_and_to_p_prime_2_in_efpn():
    a = viz.level_assignment(12.0, 0.7)  # 12 px of a 640 px image, resized to 448: 8.4 px
    assert a.side == pytest.approx(8.4) and a.threshold == pytest.approx(56 * 448 / 1400) == pytest.approx(17.92)
    assert (a.fpn.level, a.fpn.name, a.fpn.stride) == (2, "P2", 4)
    assert a.fpn.cells_across == pytest.approx(2.1) and a.fpn.cells == pytest.approx(4.41)
    assert (a.efpn.level, a.efpn.name, a.efpn.stride) == (1, "P'2", 2)
    assert a.efpn.cells_across == pytest.approx(4.2) and a.efpn.cells == pytest.approx(17.64)


def test_a_150_px_object_goes_to_p3_in_both():
    a = viz.level_assignment(150.0, 1.0)
    assert a.fpn.name == a.efpn.name == "P3" and a.fpn.stride == a.efpn.stride == 8
    assert a.fpn.cells == a.efpn.cells == pytest.approx((150 / 8) ** 2)
    # 4 + log2(150 / 224) = 3.42: floor 3; the same object at 0.7 is 105 px, under 112: P2
    assert viz.level_assignment(150.0, 0.7).fpn.name == "P2"


def test_a_side_exactly_at_the_threshold_keeps_fpns_level():
    at = viz.level_assignment(16.0, 1.0, threshold=16.0)
    assert at.efpn.level == at.fpn.level == 2
    assert viz.level_assignment(15.99, 1.0, threshold=16.0).efpn.name == "P'2"
    default = default_extended_threshold(448)
    assert viz.level_assignment(default, 1.0).efpn.name == "P2"
    assert viz.level_assignment(default * (1 - 1e-9), 1.0).efpn.name == "P'2"
    # FPN's own boundaries go up, as torchvision's 1e-6
    assert [viz.level_assignment(s, 1.0).fpn.name for s in (111.9, 112.0, 224.0, 448.0, 2000.0)] == ["P2", "P3", "P4", "P5", "P5"]


def test_the_input_scale_moves_an_object_across_the_threshold():
    small, large = viz.level_assignment(20.0, 0.7), viz.level_assignment(20.0, 1.0)  # 14 px and 20 px, T = 17.92
    assert small.efpn.name == "P'2" and large.efpn.name == "P2"
    assert small.fpn.name == large.fpn.name == "P2"
    assert viz.level_assignment(20.0, 1.0, min_size=800).efpn.name == "P'2"  # T = 32 px at 800


@pytest.mark.parametrize("side", [2.0, 5.0, 8.4, 17.9, 17.92, 40.0, 111.0, 112.0, 300.0, 700.0])
@pytest.mark.parametrize("scale", [0.5, 1.0])
def test_levels_and_cells_agree_with_sodlib_pyramid_levels(side, scale):
    a = viz.level_assignment(side, scale, threshold=17.92)
    r = side * scale
    assert a.fpn.level == int(fpn_level(r)) and a.efpn.level == int(efpn_level(r, 17.92))
    assert a.fpn.stride == 2 ** a.fpn.level and a.efpn.stride == 2 ** a.efpn.level
    assert a.fpn.cells == pytest.approx(float(cells_covered(r, a.fpn.level)))
    assert a.efpn.cells == pytest.approx(a.efpn.cells_across ** 2)


def brute_force(side: float, fpn_anchors, extended_anchors, t: float, efpn: bool):
    """(smallest matching (size, stride) or None, best worst-case IoU) by evaluating every anchor of the set."""
    anchors = [(size, 4 * 2 ** k) for k, sizes in enumerate(fpn_anchors) for size in sizes]
    if efpn:
        anchors += [(size, 2) for size in extended_anchors]
    ious = [(size, stride, worst_case_iou(side, size, stride / 2)) for size, stride in anchors]
    matching = sorted((size, stride) for size, stride, iou in ious if iou >= t)
    return (matching[0] if matching else None), max(iou for _, _, iou in ious), ious


@pytest.mark.parametrize("anchors", [(viz.COURSE_FPN_ANCHORS, viz.COURSE_EXTENDED_ANCHORS), (DENSE_FPN, DENSE_EXTENDED)])
@pytest.mark.parametrize("t", [0.5, 0.4])
def test_the_smallest_matching_anchor_agrees_with_brute_force(anchors, t):
    fpn_anchors, extended = anchors
    matched = 0
    for side in np.geomspace(3.0, 400.0, 61):
        a = viz.level_assignment(float(side), 1.0, fpn_anchors=fpn_anchors, extended_anchors=extended, iou_threshold=t)
        for pooled, efpn in ((a.fpn, False), (a.efpn, True)):
            expected, best_iou, ious = brute_force(float(side), fpn_anchors, extended, t, efpn)
            if any(abs(iou - t) < 1e-9 for *_, iou in ious):
                continue  # on the edge: either answer is right
            if expected is None:
                assert pooled.anchor is None and pooled.anchor_iou is None and pooled.anchor_level is None
            else:
                size, stride = expected
                matched += 1
                assert pooled.anchor == size and pooled.anchor_level == viz.level_name(int(math.log2(stride)))
                assert pooled.anchor_iou == pytest.approx(worst_case_iou(float(side), size, stride / 2)) and pooled.anchor_iou >= t
            assert pooled.best_anchor_iou == pytest.approx(best_iou)
    if fpn_anchors is DENSE_FPN or t < 0.45:
        assert matched > 0
    else:  # the course's anchors at 0.5: see the next test
        assert matched == 0


def test_the_course_anchors_never_match_worst_placed_at_one_half():
    # worst-placed, an anchor a on stride S reaches at most (a / (a + S))^2 (the IoU is symmetric in the two
    # sides), so IoU t needs a >= S sqrt(t) / (1 - sqrt(t)), 2.41 S at t = 0.5; the course's anchors are 2 S
    for side in np.geomspace(1.0, 600.0, 200):
        a = viz.level_assignment(float(side), 1.0)
        assert a.fpn.anchor is None and a.efpn.anchor is None and a.fpn.best_anchor_iou < 0.5
    for anchor, stride in ((8.0, 4), (16.0, 8), (4.0, 2)):
        sides = np.geomspace(1.0, 600.0, 4001)
        assert worst_case_iou(sides, anchor, stride / 2).max() == pytest.approx((anchor / (anchor + stride)) ** 2, rel=1e-3)
    matched = viz.level_assignment(10.0, 1.0, fpn_anchors=((14.0,),), extended_anchors=(7.0,))  # 3.5 S
    assert matched.fpn.anchor == 14.0 and matched.fpn.anchor_level == "P2"


def test_the_report_carries_the_numbers():
    figure, report = viz.level_explorer_view(12.0, 0.7)
    assert isinstance(figure, Figure) and isinstance(report, str)
    assert report == viz.level_assignment(12.0, 0.7).summary() and len(report.splitlines()) == 2
    for piece in ("object 12 px x 0.70 = 8.4 px", "from P2 (stride 4, 2.1 x 2.1 = 4.41 cells)",
                  "from P'2 (stride 2, 4.2 x 4.2 = 17.6 cells)", "T = 17.92 px", "IoU >= 0.5",
                  "FPN none (best 8 px on P2", "s_min = 9.66 px at stride 4", "on stride 2"):
        assert piece in report, piece
    plt.close(figure)
    _, matched = viz.level_explorer_view(10.0, 1.0, fpn_anchors=((14.0,), (28.0,)), extended_anchors=(7.0,))
    assert "FPN 14 px on P2 (worst-case IoU 0." in matched
    plt.close("all")


def test_the_figure_has_the_grids_and_the_level_steps():
    figure, _ = viz.level_explorer_view(12.0, 0.7)
    assert len(figure.axes) == 2
    ax_grid, ax_steps = figure.axes
    shares = [image.get_array() for image in ax_grid.get_images()]
    assert len(shares) == 2  # the FPN grid and the EFPN grid
    assert float(np.sum(shares[0])) == pytest.approx(4.41) and float(np.sum(shares[1])) == pytest.approx(17.64)
    assert ax_steps.get_xscale() == "log"
    assert [t.get_text() for t in ax_steps.get_yticklabels()][:2] == ["P'2 (S=2)", "P2 (S=4)"]
    plt.close(figure)
    threshold = 40.0
    figure, _ = viz.level_explorer_view(12.0, 0.7, threshold=threshold)
    efpn_steps = figure.axes[1].lines[1]  # FPN, then EFPN (drawn 0.06 below)
    xs = np.asarray(efpn_steps.get_xdata())
    assert threshold in xs and {112.0, 224.0, 448.0} <= set(xs)
    plt.close(figure)


@pytest.mark.parametrize("kwargs, name", [
    ({"object_side": 0.0}, "object_side"),
    ({"object_side": float("nan")}, "object_side"),
    ({"object_side": "big"}, "object_side"),
    ({"input_scale": 0.0}, "input_scale"),
    ({"input_scale": 9.0}, "input_scale"),
    ({"threshold": -1.0}, "threshold"),
    ({"min_size": 0}, "min_size"),
    ({"iou_threshold": 1.0}, "iou_threshold"),
    ({"fpn_anchors": ()}, "fpn_anchors"),
    ({"fpn_anchors": "8"}, "fpn_anchors"),
    ({"fpn_anchors": ((8.0,), (-16.0,))}, "fpn_anchors[1]"),
    ({"fpn_anchors": ((), ())}, "fpn_anchors"),
    ({"extended_anchors": (0.0,)}, "extended_anchors"),
])
def test_bad_arguments_name_themselves(kwargs, name):
    arguments = {"object_side": 12.0, "input_scale": 0.7, **kwargs}
    with pytest.raises(ValueError, match=re.escape(name)):
        viz.level_assignment(arguments.pop("object_side"), arguments.pop("input_scale"), **arguments)
    plt.close("all")


def test_level_explorer_wires_both_sliders():
    explorer = w.level_explorer()
    assert set(explorer.controls) == {"object_side", "input_scale"}
    assert explorer.renders == 1 and isinstance(explorer.report, viz.LevelAssignment)
    assert explorer.report.efpn.name == "P'2" and "8.4 px in the resized image" in explorer.text.value
    explorer.controls["input_scale"].value = 1.5  # 18 px, just over T = 17.92
    assert explorer.renders == 2 and explorer.report.efpn.name == "P2"
    explorer.controls["object_side"].value = 200.0  # 300 px
    assert explorer.renders == 3 and explorer.report.fpn.name == explorer.report.efpn.name == "P4"
    assert "300 px in the resized image" in explorer.text.value
    assert w.level_explorer(object_side=20.0, input_scale=1.0, min_size=800).report.efpn.name == "P'2"
    plt.close("all")
