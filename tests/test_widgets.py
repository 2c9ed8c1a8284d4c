"""The explorers only wire controls to sodlib.viz functions: built, changed and checked without a kernel."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

from sodlib.viz import widgets as w  # noqa: E402


def test_explorer_anchor_sizes_follow_octaves():
    sizes = w.explorer_anchor_sizes(16, 6, 2)
    assert [round(s, 1) for s in sizes] == [16.0, 22.6, 32.0, 45.3, 64.0, 90.5]
    assert w.explorer_anchor_sizes(32, 3, 1) == (32.0, 64.0, 128.0)
    with pytest.raises(ValueError):
        w.explorer_anchor_sizes(0, 1, 1)


def test_iou_explorer_redraws_on_every_control():
    explorer = w.iou_explorer(object_side=16, anchor_side=24, offset=4, iou_threshold=0.5)
    assert explorer.renders == 1 and explorer.report.iou == pytest.approx(16**2 / 24**2)  # the object lies inside the anchor
    first = explorer.report.iou
    explorer.controls["offset"].value = 8.0
    assert explorer.renders == 2 and explorer.report.iou < first
    explorer.controls["iou_threshold"].value = 0.3
    assert explorer.report.iou_threshold == 0.3 and explorer.renders == 3
    assert "IoU at d = 8 px" in explorer.text.value


class TinyDataset:
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int):
        image = torch.zeros(3, 64, 64)
        side = 12.0 if index == 0 else 40.0
        target = {"boxes": torch.tensor([[8.0, 8.0, 8.0 + side, 8.0 + side]]), "area": torch.tensor([side * side]),
                  "iscrowd": torch.tensor([0]), "labels": torch.tensor([1]), "image_id": index}
        return image, target


def test_anchor_explorer_wires_every_slider():
    explorer = w.anchor_explorer(TinyDataset(), stride=16, smallest=32, count=3)
    assert set(explorer.controls) == {"image", "stride", "smallest", "count", "per_octave", "ratios", "offset", "pos_iou", "neg_iou"}
    assert explorer.report.objects[0]["bin"] == "small"
    before = explorer.report.objects[0]["best_iou"]
    explorer.controls["stride"].value = 4
    explorer.controls["smallest"].value = 16
    assert explorer.report.objects[0]["best_iou"] > before
    explorer.controls["image"].value = 1
    assert explorer.report.objects[0]["bin"] == "medium" and explorer.report.small_without_anchor_share != explorer.report.small_without_anchor_share  # NaN
    renders = explorer.renders
    explorer.controls["pos_iou"].value = 0.3
    explorer.controls["neg_iou"].value = 0.5  # neg above pos: the report says why, nothing is drawn
    assert explorer.renders == renders + 1 and "neg_iou" in explorer.text.value
