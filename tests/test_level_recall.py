"""Objects per FPN / EFPN pyramid level (sodlib.stats.pyramid_levels) and recall per resized RoI side with the level
each side lands on (sodlib.eval.level_recall), against hand counts on a tiny file written to tmp_path."""
from __future__ import annotations

import contextlib
import io
import json
import math
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO
from torch import nn

from sodlib.data import CocoDetection, load_coco
from sodlib.eval import recall_by_size, recall_by_size_from_predictions
from sodlib.stats import level_shares, levels_by_side, resize_scale

# Image 1 is 640 x 640 and image 2 320 x 320, so at min_size = max_size = 448 their scales are 0.7 and 1.4, and
# EFPN's default threshold is 56 * 448 / 1400 = 17.92 px. Resized sides and levels (FPN, EFPN):
#   id 1: 10 x 10 in image 1  -> 7.0   P2, P'2     id 4: 10 x 10 in image 2 -> 14.0  P2, P'2
#   id 2: 200 x 200 in 1      -> 140   P3, P3      id 5: crowd in image 2 (left out)
#   id 3: 40 x 40 in 1        -> 28    P2, P2      id 6: 25 x 25 in 1 (class 2) -> 17.5 P2, P'2
#   id 7: 600 x 600 in 1      -> 420   P4, P4
RESIZE = dict(min_size=448, max_size=448)


def _coco_dict() -> dict:
    box = lambda i, image, x, y, w, h, category=1, crowd=0: {  # noqa: E731
        "id": i, "image_id": image, "category_id": category, "bbox": [x, y, w, h], "area": float(w * h), "iscrowd": crowd,
        "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]}
    crowd = box(5, 2, 100, 100, 50, 50, crowd=1)
    # an uncompressed RLE (column-major runs, zeros first) of the 50 x 50 square at (100, 100) of the 320 x 320 image
    runs = [100 * 320 + 100] + [count for column in range(50) for count in (50, 270 if column < 49 else 170 + 170 * 320)]
    crowd["segmentation"] = {"counts": runs, "size": [320, 320]}
    return {
        "images": [{"id": 1, "file_name": "one.png", "width": 640, "height": 640},
                   {"id": 2, "file_name": "two.png", "width": 320, "height": 320}],
        "categories": [{"id": 1, "name": "sign"}, {"id": 2, "name": "light"}],
        "annotations": [box(1, 1, 0, 0, 10, 10), box(2, 1, 100, 100, 200, 200), box(3, 1, 400, 0, 40, 40),
                        box(4, 2, 10, 10, 10, 10), crowd, box(6, 1, 500, 500, 25, 25, category=2),
                        box(7, 1, 20, 20, 600, 600)],
    }


@pytest.fixture
def coco_files(tmp_path):
    json_path = tmp_path / "instances.json"
    json_path.write_text(json.dumps(_coco_dict()))
    images = tmp_path / "images"
    images.mkdir()
    for name, side in (("one.png", 640), ("two.png", 320)):
        Image.new("RGB", (side, side)).save(images / name)
    return json_path, images


def _detections(rows):
    """``(boxes, labels, scores)`` rows -> a prediction dict of tensors."""
    if not rows:
        return {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "scores": torch.zeros(0)}
    boxes, labels, scores = zip(*rows)
    return {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels),
            "scores": torch.tensor(scores, dtype=torch.float32)}


#: Image 1: a hit on id 1, id 2 found by the wrong class, id 3 by a detection under score_threshold 0.05, a hit on
#: id 6 (class 2), nothing on id 7. Image 2: a hit on id 4 and a detection on the crowd region (ignored).
DETECTIONS = {
    1: [([0, 0, 10, 10], 1, 0.9), ([100, 100, 300, 300], 2, 0.8), ([400, 0, 440, 40], 1, 0.03),
        ([500, 500, 525, 525], 2, 0.6)],
    2: [([10, 10, 20, 20], 1, 0.7), ([100, 100, 150, 150], 1, 0.5)],
}


def _predictions():
    return [{"image_id": image_id, **_detections(rows)} for image_id, rows in DETECTIONS.items()]


def test_resize_scale_by_hand():
    assert resize_scale(640, 480, 800, 1333) == pytest.approx(800 / 480) == pytest.approx(1.6667, abs=1e-4)
    assert resize_scale(480, 640, 800, 1333) == pytest.approx(1.6667, abs=1e-4)  # portrait: the same short side
    assert resize_scale(2048, 2048, 1400, 1400) == pytest.approx(0.6836, abs=1e-4)
    assert resize_scale(2000, 500, 800, 1333) == pytest.approx(1333 / 2000)  # the long side caps it
    assert resize_scale([640, 320], [640, 320], 448, 448).tolist() == pytest.approx([0.7, 1.4])
    with pytest.raises(ValueError, match="min_size"):
        resize_scale(640, 480, 0, 1333)
    with pytest.raises(ValueError, match="max_size"):
        resize_scale(640, 480, 800, -1)


def test_level_shares_by_hand(coco_files):
    shares = level_shares(coco_files[0], **RESIZE)
    assert shares["threshold"] == pytest.approx(17.92)
    assert (shares["objects"], shares["crowd_excluded"], shares["degenerate"], shares["images"]) == (6, 1, 0, 2)
    assert shares["fpn_counts"] == {"P2": 4, "P3": 1, "P4": 1, "P5": 0}
    assert shares["efpn_counts"] == {"P'2": 3, "P2": 1, "P3": 1, "P4": 1, "P5": 0}
    assert shares["fpn"] == pytest.approx({"P2": 4 / 6, "P3": 1 / 6, "P4": 1 / 6, "P5": 0.0})
    assert shares["efpn"] == pytest.approx({"P'2": 0.5, "P2": 1 / 6, "P3": 1 / 6, "P4": 1 / 6, "P5": 0.0})
    assert shares["median_cells"]["efpn"]["P'2"] == pytest.approx((14 / 2) ** 2)  # sides 7, 14, 17.5 on stride 2
    assert shares["median_cells"]["fpn"]["P5"] is None
    bins = {row["bin"]: row for row in shares["bins"]}
    assert list(bins) == ["0-8", "8-16", "16-32", "32-64", "64-112", "112-224", "224-inf"]
    assert [row["objects"] for row in shares["bins"]] == [1, 1, 2, 0, 0, 1, 1]
    assert bins["0-8"]["fpn"] == {"P2": 1.0} and bins["0-8"]["efpn"] == {"P'2": 1.0}
    assert bins["0-8"]["fpn_median_cells"] == pytest.approx((7 / 4) ** 2)
    assert bins["0-8"]["efpn_median_cells"] == pytest.approx((7 / 2) ** 2)
    assert bins["16-32"]["fpn"] == {"P2": 1.0} and bins["16-32"]["efpn"] == {"P'2": 0.5, "P2": 0.5}  # 17.5 and 28
    assert bins["16-32"]["efpn_median_cells"] == pytest.approx(((17.5 / 2) ** 2 + (28 / 4) ** 2) / 2)
    assert bins["32-64"]["fpn"] == {} and bins["32-64"]["fpn_median_cells"] is None
    assert bins["112-224"]["fpn"] == {"P3": 1.0} == bins["112-224"]["efpn"]  # 140 px: P3 in both
    assert bins["224-inf"]["fpn"] == {"P4": 1.0}
    # a threshold of 30 px sends the 28 px object to P'2 as well; a COCO object gives the same as its path
    wide = level_shares(load_coco(coco_files[0]), **RESIZE, threshold=30)
    assert wide["efpn_counts"]["P'2"] == 4 and wide["threshold"] == 30.0


def test_level_shares_counts_degenerate_boxes_apart(coco_files):
    data = _coco_dict()
    data["annotations"].append({"id": 8, "image_id": 1, "category_id": 1, "bbox": [5, 5, 0, 12], "area": 0.0, "iscrowd": 0})
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    shares = level_shares(coco, **RESIZE)
    assert shares["degenerate"] == 1 and shares["objects"] == 6


def test_levels_by_side_with_custom_edges():
    rows = levels_by_side([5.0, 20.0, 100.0, 300.0], threshold=17.92, side_edges=(4, 32, 200))
    assert [(row["bin"], row["objects"]) for row in rows] == [("4-32", 2), ("32-200", 1)]  # 300 px is in no bin
    assert rows[0]["efpn"] == {"P'2": 0.5, "P2": 0.5}


@pytest.mark.parametrize("side_edges", [(0, 16, 8, math.inf), (0, 16, 16, 32), (8,), (-1, 8), (0, math.inf, 1e9)])
def test_bad_side_edges_are_refused(coco_files, side_edges):
    with pytest.raises(ValueError, match="side_edges"):
        level_shares(coco_files[0], **RESIZE, side_edges=side_edges)
    dataset = CocoDetection(*coco_files)
    with pytest.raises(ValueError, match="side_edges"):
        recall_by_size_from_predictions(_predictions(), dataset, **RESIZE, side_edges=side_edges)


def test_bad_thresholds_and_sizes_are_refused(coco_files):
    with pytest.raises(ValueError, match="threshold"):
        level_shares(coco_files[0], **RESIZE, threshold=-4)
    with pytest.raises(ValueError, match="min_size"):
        level_shares(coco_files[0], min_size=0, max_size=448)
    dataset = CocoDetection(*coco_files)
    for bad, name in ((dict(threshold=-1.0), "threshold"), (dict(score_threshold=1.5), "score_threshold"),
                      (dict(iou_threshold=0), "iou_threshold"), (dict(max_size=None), "max_size")):
        with pytest.raises(ValueError, match=name):
            recall_by_size_from_predictions(_predictions(), dataset, **{**RESIZE, **bad})
    with pytest.raises(ValueError, match="predictions"):
        recall_by_size_from_predictions(_predictions()[:1], dataset, **RESIZE)  # image 2 has no entry
    with pytest.raises(ValueError, match="twice"):
        recall_by_size_from_predictions(_predictions() * 2, dataset, **RESIZE)


def test_recall_by_size_from_predictions_by_hand(coco_files):
    dataset = CocoDetection(*coco_files)
    rows = recall_by_size_from_predictions(_predictions(), dataset, **RESIZE)
    by_bin = {row["bin"]: row for row in rows}
    counts = {row["bin"]: (row["objects"], row["detected"], row["recall"]) for row in rows}
    assert counts == {"0-8": (1, 1, 1.0), "8-16": (1, 1, 1.0), "16-32": (2, 1, 0.5), "32-64": (0, 0, None),
                      "64-112": (0, 0, None), "112-224": (1, 0, 0.0), "224-inf": (1, 0, 0.0)}
    assert by_bin["16-32"]["efpn"] == {"P'2": 0.5, "P2": 0.5} and by_bin["8-16"]["efpn"] == {"P'2": 1.0}
    assert by_bin["112-224"]["fpn"] == {"P3": 1.0}
    # a lower score threshold lets the 0.03 detection find the 28 px object
    low = recall_by_size_from_predictions(_predictions(), dataset, **RESIZE, score_threshold=0.01)
    assert {row["bin"]: row["detected"] for row in low}["16-32"] == 2
    # one bin for everything: 3 of the 6 non-crowd objects found
    (single,) = recall_by_size_from_predictions(_predictions(), dataset, **RESIZE, side_edges=(0, math.inf))
    assert (single["objects"], single["detected"], single["recall"]) == (6, 3, 0.5)


class StubDetector(nn.Module):
    """Returns :data:`DETECTIONS` of the image it is given (told apart by width), with a torchvision-like transform."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.transform = SimpleNamespace(min_size=(448,), max_size=448)

    def forward(self, images):
        return [_detections(DETECTIONS[1 if image.shape[-1] == 640 else 2]) for image in images]


def test_recall_by_size_runs_the_model_with_its_resize(coco_files):
    dataset = CocoDetection(*coco_files)
    model = StubDetector()
    rows = recall_by_size(model, dataset, batch_size=2)
    assert rows == recall_by_size_from_predictions(_predictions(), dataset, **RESIZE)
    assert model.training  # predict puts the mode back
    bare = StubDetector()
    del bare.transform
    with pytest.raises(ValueError, match="min_size"):
        recall_by_size(bare, dataset)
    assert recall_by_size(bare, dataset, **RESIZE) == rows
