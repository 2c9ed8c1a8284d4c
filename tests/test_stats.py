"""sodlib.stats: size-bin and anchor-matching statistics on hand-built cases, the kernel vs the torch
reference, the R16 oracle, and coco-mini facts (skipped when coco-mini is absent)."""
from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from sodlib.anchors import FPN_ANCHORS, AnchorSet
from sodlib.data import coco_mini_dir
from sodlib.data.coco import coco_from_dict
from sodlib.stats import (
    anchor_matching_reference,
    anchor_matching_statistics,
    object_table,
    resize_ratios,
    simulate_random_squares,
    size_statistics,
)


def make_coco(images: list[tuple[int, int]], annotations: list[dict], categories=((1, "thing"), (2, "other"))):
    """A pycocotools COCO with images of ``(height, width)`` (ids 1..) and the given annotations."""
    data = {
        "images": [{"id": i + 1, "height": h, "width": w, "file_name": f"{i + 1}.jpg"} for i, (h, w) in enumerate(images)],
        "annotations": [{"id": k + 1, "iscrowd": 0, "category_id": 1, **a} for k, a in enumerate(annotations)],
        "categories": [{"id": c, "name": n} for c, n in categories],
    }
    return coco_from_dict(data)


def box_annotation(image_id: int, x1: float, y1: float, x2: float, y2: float, **extra) -> dict:
    w, h = x2 - x1, y2 - y1
    return {"image_id": image_id, "bbox": [x1, y1, w, h], "area": extra.pop("area", w * h), **extra}


# ---------------------------------------------------------------- size statistics
def hand_built_sizes():
    return make_coco(
        [(100, 100), (200, 300), (50, 50), (60, 60)],
        [
            box_annotation(1, 0, 0, 10, 10),  # small, 100
            box_annotation(1, 0, 0, 32, 32),  # exactly 1024: small and medium
            box_annotation(2, 0, 0, 100, 100, category_id=2),  # large, 10000
            box_annotation(3, 0, 0, 5, 10, iscrowd=1, segmentation={"counts": [0, 50, 2450], "size": [50, 50]}),  # crowd, 50
            box_annotation(2, 0, 0, 40, 50, area=1000.0),  # mask area 1000 (small), box area 2000 (medium)
        ],
    )


def test_size_statistics_hand_built():
    stats = size_statistics(hand_built_sizes())
    rows = {r["bin"]: r for r in stats.rows()}
    assert stats.num_objects == 4 and stats.num_images == 4 and stats.crowd_excluded == 1
    assert [rows[b]["objects"] for b in ("small", "medium", "large")] == [3, 1, 1]  # 1024 is in both bins
    assert rows["small"]["object_share"] == pytest.approx(3 / 4)
    assert rows["small"]["images"] == 2 and rows["small"]["image_share"] == pytest.approx(2 / 4)
    assert rows["large"]["image_share"] == pytest.approx(1 / 4)
    total = 100 + 1024 + 10000 + 1000
    assert rows["small"]["area_share"] == pytest.approx((100 + 1024 + 1000) / total)
    assert rows["medium"]["area_share"] == pytest.approx(1024 / total)
    assert rows["large"]["area_share"] == pytest.approx(10000 / total)
    categories = {c.category_id: c for c in stats.categories}
    assert categories[1].objects_per_bin == {"small": 3, "medium": 1, "large": 0}
    assert stats.categories[0].name == "thing"  # sorted by small share, largest first
    json.dumps(stats.to_dict())


def test_size_statistics_crowd_box_mode_and_resize():
    with_crowd = {r["bin"]: r for r in size_statistics(hand_built_sizes(), include_crowd=True).rows()}
    assert with_crowd["small"]["objects"] == 4 and with_crowd["small"]["images"] == 3
    box = {r["bin"]: r for r in size_statistics(hand_built_sizes(), area="box").rows()}
    assert box["small"]["objects"] == 2 and box["medium"]["objects"] == 2  # the 40 x 50 box is medium by box area
    # image 1 is 100 x 100: scale = min(800 / 100, 1333 / 100) = 8, areas x 64 -> 6400 medium, 65536 large
    resized = size_statistics(hand_built_sizes(), resize=(800, 1333))
    assert {r["bin"]: r["objects"] for r in resized.rows()} == {"small": 0, "medium": 1, "large": 3}
    with pytest.raises(ValueError, match="area='mask'"):
        size_statistics(hand_built_sizes(), area="pixels")  # type: ignore[arg-type]


def test_resize_follows_generalized_rcnn_transform():
    heights, widths = np.array([480, 427, 1000]), np.array([640, 640, 200])
    new_h, new_w, ratio_y, ratio_x = resize_ratios(heights, widths, (800, 1333))
    # 480 x 640: scale 800 / 480; 427 x 640: 800 / 427 (640 * 1.87 = 1199 < 1333); 1000 x 200: 1333 / 1000
    assert new_h.tolist() == [800, 800, 1333] and new_w.tolist() == [1066, 1199, 266]
    np.testing.assert_allclose(ratio_x, new_w / widths)
    torch = pytest.importorskip("torch")
    for h, w, nh, nw in zip(heights, widths, new_h, new_w):
        scale = min(800 / min(h, w), 1333 / max(h, w))
        out = torch.nn.functional.interpolate(torch.zeros(1, 1, int(h), int(w)), scale_factor=scale, mode="bilinear", recompute_scale_factor=True, align_corners=False)
        assert tuple(out.shape[-2:]) == (nh, nw)


def test_bad_input_gets_a_clear_message(tmp_path):
    with pytest.raises(ValueError, match="no annotations"):
        size_statistics(make_coco([(10, 10)], []))
    with pytest.raises(ValueError, match="no annotations.*crowd"):
        anchor_matching_statistics(make_coco([(10, 10)], [box_annotation(1, 0, 0, 4, 4, iscrowd=1)]))
    with pytest.raises(ValueError, match="resize"):
        size_statistics(hand_built_sizes(), resize=(800,))
    with pytest.raises(ValueError, match="ties"):
        anchor_matching_statistics(hand_built_sizes(), ties="first")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="AnchorSet"):
        anchor_matching_statistics(hand_built_sizes(), anchors=[32, 64])  # type: ignore[arg-type]
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [}')
    with pytest.raises(ValueError, match="json"):
        size_statistics(broken)
    with pytest.raises(FileNotFoundError):
        size_statistics(tmp_path / "missing.json")


# ---------------------------------------------------------------- anchor matching, hand-built
ONE_LEVEL = AnchorSet.single_level(16, [32.0], (1.0,), offset=0.0)  # centres 0, 16, 32, 48 on a 64 x 64 image


def test_object_exactly_at_an_anchor():
    coco = make_coco([(64, 64)], [box_annotation(1, 0, 0, 32, 32)])  # = the anchor centred at (16, 16)
    stats = anchor_matching_statistics(coco, anchors=ONE_LEVEL)
    small, medium, _ = stats.bins
    assert stats.anchors == 16 and stats.positive_anchors == 1
    assert medium.objects == 1 and small.objects == 1  # area 1024 is small and medium
    assert medium.mean_best_iou == 1.0 and medium.matched_anchors_per_object == 1.0
    assert medium.positive_anchor_share == 1.0 and small.positive_anchor_share == 1.0


def test_object_between_anchors_ties():
    coco = make_coco([(64, 64)], [box_annotation(1, 19, 19, 29, 29)])  # 10 x 10 centred at (24, 24)
    tied = anchor_matching_statistics(coco, anchors=ONE_LEVEL, ties="all")
    assert tied.bins[0].mean_best_iou == pytest.approx(100 / 1024)
    assert tied.bins[0].matched_anchors_per_object == 4  # four 32 px anchors contain it
    assert tied.positive_anchors == 4 and tied.negative_anchors == 12
    one = anchor_matching_statistics(coco, anchors=ONE_LEVEL, ties="one")
    assert one.bins[0].matched_anchors_per_object == 1 and one.positive_anchors == 1
    none = anchor_matching_statistics(coco, anchors=ONE_LEVEL, allow_low_quality=False)
    assert none.positive_anchors == 0 and none.bins[0].unmatched_share == 1.0


def test_best_anchor_taken_by_a_larger_neighbour():
    """torchvision's rule: a best anchor of a small object that overlaps another object more goes to that one."""
    coco = make_coco([(64, 64)], [box_annotation(1, 0, 0, 32, 32), box_annotation(1, 2, 2, 8, 8)])
    # the small one's best anchor (lowest index) is centred at (0, 0): IoU 36 / 1024 with it, but
    # 256 / 1792 with the large object, which therefore gets it besides its own exact anchor
    stats = anchor_matching_statistics(coco, anchors=ONE_LEVEL, ties="one")
    assert stats.matched_anchors.tolist() == [2, 0]
    assert stats.best_iou[1] == pytest.approx(36 / 1024)


def test_degenerate_boxes_are_left_out():
    coco = make_coco([(64, 64)], [box_annotation(1, 0, 0, 32, 32), box_annotation(1, 5, 5, 5, 9, area=0.0)])
    stats = anchor_matching_statistics(coco, anchors=ONE_LEVEL)
    assert stats.degenerate_objects == 1 and stats.num_objects == 1


# ---------------------------------------------------------------- kernel vs reference
def random_coco(seed: int, num_images: int = 8, grid: int = 2):
    """Images of a few sizes; boxes on a coarse grid (many exact ties), with duplicates and overlaps."""
    rng = np.random.default_rng(seed)
    sizes = [(96, 128), (100, 75), (64, 64), (160, 200)]
    images, annotations = [], []
    for i in range(num_images):
        h, w = sizes[i % len(sizes)]
        images.append((h, w))
        for _ in range(rng.integers(0, 7)):
            bw, bh = rng.integers(1, min(h, w) // grid - 1, size=2) * grid
            x, y = rng.integers(0, 60, size=2) * grid
            x, y = min(x, w - bw), min(y, h - bh)
            annotations.append(box_annotation(i + 1, float(max(x, 0)), float(max(y, 0)), float(max(x, 0) + bw), float(max(y, 0) + bh)))
        if annotations and annotations[-1]["image_id"] == i + 1:
            annotations.append(dict(annotations[-1]))  # an exact duplicate: anchors tied between two objects
    return make_coco(images, annotations)


SMALL_FPN = AnchorSet(strides=(4, 8, 16), sizes=((8, 16), (32,), (64,)), aspect_ratios=(0.5, 1.0, 2.0))


def assert_same(kernel, reference):
    np.testing.assert_array_equal(kernel.best_iou, reference.best_iou)
    np.testing.assert_array_equal(kernel.matched_anchors, reference.matched_anchors)
    assert (kernel.anchors, kernel.positive_anchors, kernel.ignored_anchors) == (reference.anchors, reference.positive_anchors, reference.ignored_anchors)
    np.testing.assert_equal(kernel.rows(), reference.rows())  # NaN == NaN for empty bins


@pytest.mark.parametrize("ties", ["all", "one", "exact"])
@pytest.mark.parametrize("offset", [0.0, 0.5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kernel_equals_reference_on_random_scenes(seed, offset, ties):
    coco = random_coco(seed)
    anchors = AnchorSet(SMALL_FPN.strides, SMALL_FPN.sizes, SMALL_FPN.aspect_ratios, offset=offset, size_divisible=1 + 31 * (seed % 2))
    for allow_low_quality in (True, False):
        args = dict(anchors=anchors, ties=ties, allow_low_quality=allow_low_quality, pos_iou=0.5 + 0.1 * seed, neg_iou=0.3)
        assert_same(anchor_matching_statistics(coco, **args), anchor_matching_reference(coco, **args))


@pytest.mark.coco_mini
@pytest.mark.parametrize("resize", [None, (800, 1333)])
def test_kernel_equals_reference_on_coco_mini_images(resize):
    root = coco_mini_dir()
    if root is None:
        pytest.skip("coco-mini is not on this machine")
    from sodlib.data import load_coco

    coco = load_coco(root / "annotations" / "instances_train2017_subset.json")
    data = coco.dataset
    some = {im["id"] for im in data["images"][:8]}
    subset = coco_from_dict({**data, "images": data["images"][:8], "annotations": [a for a in data["annotations"] if a["image_id"] in some]})
    for ties in ("all", "one", "exact"):
        assert_same(anchor_matching_statistics(subset, ties=ties, resize=resize), anchor_matching_reference(subset, ties=ties, resize=resize))


# ---------------------------------------------------------------- R16 oracle
R16 = {8: 0.06, 16: 0.25, 20: 0.39, 24: 0.56, 28: 0.77}


def test_r16_mean_best_iou_of_random_squares():
    """Random squares against the FPN anchor set: mean best IoU matches R16 within Monte-Carlo tolerance."""
    rng = np.random.default_rng(16)
    per_side = 150
    images, annotations = [], []
    for side in R16:
        for _ in range(per_side):
            images.append((480, 640))
            x, y = rng.uniform(64, 640 - 64 - side), rng.uniform(64, 480 - 64 - side)
            annotations.append(box_annotation(len(images), x, y, x + side, y + side))
    stats = anchor_matching_statistics(make_coco(images, annotations), anchors=FPN_ANCHORS)
    best = stats.best_iou.reshape(len(R16), per_side)
    for row, (side, expected) in zip(best, R16.items()):
        # a square of side <= 28 always lies inside a 32 px anchor (centres 4 px apart): IoU = side^2 / 1024
        assert row.mean() == pytest.approx(expected, abs=0.01), side
        assert row.std() / np.sqrt(per_side) < 0.005


# ---------------------------------------------------------------- coco-mini facts
@pytest.mark.coco_mini
def test_coco_mini_counts():
    root = coco_mini_dir()
    if root is None:
        pytest.skip("coco-mini is not on this machine")
    path = root / "annotations" / "instances_train2017_subset.json"
    stats = size_statistics(path)
    rows = {r["bin"]: r for r in stats.rows()}
    assert [rows[b]["objects"] for b in ("small", "medium", "large")] == [1247, 971, 592]
    assert rows["small"]["images"] == 188 and stats.num_images == 337
    table = object_table(path)
    assert table.num_objects == 2810 and table.crowd_excluded == 28


# ---------------------------------------------------------------- commands
def write_json(tmp_path, coco) -> str:
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(coco.dataset))
    return str(path)


def test_stats_command_formats(tmp_path, capsys):
    from sodlib.cli import main

    path = write_json(tmp_path, hand_built_sizes())
    assert main(["stats", path, "--anchors", "16:32", "--ratios", "1"]) == 0
    out = capsys.readouterr().out
    assert "crowd excluded (1)" in out and "mean best IoU" in out and "75.00%" in out
    assert main(["stats", path, "--format", "json", "--resize", "800", "1333", "--ties", "one"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["anchor_matching"]["ties"] == "one" and document["size_statistics"]["resize"] == [800, 1333]
    assert main(["stats", path, "--format", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("bin,objects,object_share") and "mean_best_iou" in lines[0] and len(lines) == 4
    header = lines[0].split(",")
    assert len(header) == len(set(header)) and "matched_objects" in header  # each column once
    assert main(["stats", path, "--format", "csv", "--categories", "2", "--no-matching"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    blank = rows.index([])
    assert rows[blank + 1][:3] == ["category_id", "name", "objects"] and len(rows) - blank - 2 == 2
    assert main(["stats", path, "--format", "json", "--categories", "1"]) == 0
    assert len(json.loads(capsys.readouterr().out)["categories"]) == 1
    assert main(["stats", path, "--anchors", "16:x"]) == 2
    assert "--anchors" in capsys.readouterr().err


def test_anchors_command(tmp_path, capsys):
    from sodlib.cli import main

    sides = np.geomspace(20, 200, 40)
    coco = make_coco([(400, 400)], [box_annotation(1, 0, 0, float(s), float(s)) for s in sides])
    assert main(["anchors", "--annotations", write_json(tmp_path, coco), "--stride", "8", "--iou", "0.5", "--format", "json"]) == 0
    derived = json.loads(capsys.readouterr().out)
    assert derived["sizes"] == sorted(derived["sizes"]) and derived["min_matchable_size"] == pytest.approx(19.314, abs=1e-3)
    assert main(["anchors", "--annotations", write_json(tmp_path, coco), "--stride", "8"]) == 0
    out = capsys.readouterr().out
    assert "smallest matchable side 19.31 px" in out
    config_line = out.strip().splitlines()[-1].split(": ", 1)[1]
    assert config_line == "anchor_sizes = [[" + ", ".join(f"{v:.1f}" for v in derived["sizes"]) + "]]"
    import tomllib

    assert tomllib.loads(config_line)["anchor_sizes"] == [[round(v, 1) for v in derived["sizes"]]]  # pastes into a config


def test_anchors_are_derived_from_box_sides_not_mask_areas(tmp_path, capsys):
    """Objects whose masks fill half their boxes: the sides the anchors are matched against are the boxes'
    sqrt(w h), so the derived sizes equal those derived from the box sides directly, not from sqrt(mask area)."""
    from sodlib.anchors import derive_anchor_sizes
    from sodlib.cli import main

    rng = np.random.default_rng(0)
    wh = rng.uniform(40, 160, size=(60, 2))
    annotations = [box_annotation(1, 0, 0, float(w), float(h), area=0.5 * float(w * h)) for w, h in wh]
    path = write_json(tmp_path, make_coco([(400, 400)], annotations))
    assert main(["anchors", "--annotations", path, "--stride", "16", "--format", "json"]) == 0
    by_box = json.loads(capsys.readouterr().out)
    expected = derive_anchor_sizes(np.sqrt(wh[:, 0] * wh[:, 1]), 16, 0.5)
    assert by_box["sides"] == "box" and by_box["sizes"] == pytest.approx(expected.sizes)
    assert by_box["unmatchable_share"] == pytest.approx(expected.unmatchable_share)
    assert main(["anchors", "--annotations", path, "--stride", "16", "--format", "json", "--sides", "mask"]) == 0
    by_mask = json.loads(capsys.readouterr().out)
    assert by_mask["sizes"] == pytest.approx(derive_anchor_sizes(np.sqrt(0.5 * wh[:, 0] * wh[:, 1]), 16, 0.5).sizes)
    assert by_mask["sizes"][0] < by_box["sizes"][0] and by_mask["unmatchable_share"] > by_box["unmatchable_share"]
    assert main(["anchors", "--annotations", path, "--stride", "16"]) == 0
    assert "sides sqrt(w h) of the boxes" in capsys.readouterr().out


def test_box_sides_of_an_object_table():
    from sodlib.stats import object_table

    coco = make_coco([(100, 100)], [box_annotation(1, 10, 10, 14, 19, area=20.0), box_annotation(1, 0, 0, 5, 5, area=25.0)])
    table = object_table(coco)
    np.testing.assert_allclose(table.box_sides, [6.0, 5.0])
    np.testing.assert_allclose(table.areas, [20.0, 25.0])  # the area field keeps the bins


def test_simulate_random_squares_reproduces_r16():
    result = simulate_random_squares([8, 16, 20, 24, 28], per_side=60, seed=3)
    for side, expected in {8: 0.06, 16: 0.25, 20: 0.39, 24: 0.56, 28: 0.77}.items():
        mean, error = result[float(side)]
        assert mean == pytest.approx(expected, abs=0.01) and error < 0.01
    with pytest.raises(ValueError, match="does not fit"):
        simulate_random_squares([500])
