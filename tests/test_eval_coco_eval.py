"""sodlib.eval's COCO evaluation against pycocotools run by hand on the same detections."""
from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import nn

from sodlib.data import CocoDetection, load_coco
from sodlib.eval import METRIC_NAMES, coco_results, evaluate, evaluate_results, per_category_ap, run_cocoeval
from sodlib.eval.evaluate import dataset_categories, label_map_for

IMAGE_SIDE = 160

# the hand-made ground truth sets areas apart from its polygons on purpose (the size bins follow the area field)
pytestmark = pytest.mark.filterwarnings("ignore::sodlib.data.coco.CocoWarning")


def _ground_truth(seed: int = 0, num_images: int = 12) -> dict:
    """Images with objects of every size bin (sides 3..120 px), three categories, a few crowd regions."""
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "file_name": f"{image_id:04d}.png", "width": IMAGE_SIDE, "height": IMAGE_SIDE})
        for _ in range(int(rng.integers(1, 7))):
            side_w, side_h = np.exp(rng.uniform(np.log(3), np.log(120), size=2))
            x, y = rng.uniform(0, IMAGE_SIDE - side_w), rng.uniform(0, IMAGE_SIDE - side_h)
            crowd = int(rng.random() < 0.05)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(rng.choice([2, 5, 9])),
                                "bbox": [round(x, 2), round(y, 2), round(side_w, 2), round(side_h, 2)],
                                # the area is a "mask" area: a fraction of the box, as for real shapes
                                "area": round(side_w * side_h * rng.uniform(0.5, 1.0), 2), "iscrowd": crowd,
                                "segmentation": [[x, y, x + side_w, y, x + side_w, y + side_h, x, y + side_h]]})
    # one certain large object per category (log-uniform sides rarely reach area 96^2)
    for category, image_id in ((2, 1), (5, 2), (9, 3)):
        annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category, "bbox": [20.0, 15.0, 130.0, 120.0],
                            "area": 11000.0, "iscrowd": 0, "segmentation": [[20, 15, 150, 15, 150, 135, 20, 135]]})
    categories = [{"id": c, "name": n} for c, n in ((2, "a"), (5, "b"), (9, "c"))]
    for annotation in annotations:  # crowd regions carry an RLE, as load_coco requires
        if annotation["iscrowd"]:
            annotation["segmentation"] = {"counts": [0, IMAGE_SIDE * IMAGE_SIDE], "size": [IMAGE_SIDE, IMAGE_SIDE]}
            annotation["area"] = float(IMAGE_SIDE * IMAGE_SIDE)
            annotation["bbox"] = [0.0, 0.0, float(IMAGE_SIDE), float(IMAGE_SIDE)]
    return {"images": images, "annotations": annotations, "categories": categories}


def _detections(gt: dict, seed: int = 1) -> list[dict]:
    """Jittered copies of most objects (some with the wrong class), misses, and false positives."""
    rng = np.random.default_rng(seed)
    results = []
    for annotation in gt["annotations"]:
        if annotation["iscrowd"] or rng.random() < 0.2:
            continue
        x, y, w, h = annotation["bbox"]
        jitter = rng.normal(0, 0.12, size=4) * np.array([w, h, w, h])
        category = annotation["category_id"] if rng.random() < 0.85 else 5
        results.append({"image_id": annotation["image_id"], "category_id": category,
                        "bbox": [x + jitter[0], y + jitter[1], max(1.0, w + jitter[2]), max(1.0, h + jitter[3])],
                        "score": float(rng.uniform(0.3, 1.0))})
    for image in gt["images"]:
        for _ in range(int(rng.integers(0, 4))):
            w, h = np.exp(rng.uniform(np.log(3), np.log(80), size=2))
            results.append({"image_id": image["id"], "category_id": int(rng.choice([2, 5, 9])),
                            "bbox": [float(rng.uniform(0, IMAGE_SIDE - w)), float(rng.uniform(0, IMAGE_SIDE - h)), float(w), float(h)],
                            "score": float(rng.uniform(0.0, 0.7))})
    return results


def _by_hand(gt: dict, results: list[dict], area_ranges: list[list[float]] | None = None,
             category_ids: list[int] | None = None) -> np.ndarray:
    """pycocotools' own summarize(); ``area_ranges`` replaces (all, small, medium, large) if given;
    ``category_ids`` restricts the evaluation to those categories."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        cocoeval = COCOeval(coco_gt, coco_dt, "bbox")
        if area_ranges is not None:
            cocoeval.params.areaRng = area_ranges
        if category_ids is not None:
            cocoeval.params.catIds = category_ids
        cocoeval.evaluate()
        cocoeval.accumulate()
        cocoeval.summarize()
    return cocoeval.stats


@pytest.fixture(scope="module")
def gt_files(tmp_path_factory):
    """The ground truth on disk; pixel (0, 0) of image ``i`` encodes ``i`` so that a fake model can tell images apart."""
    folder = tmp_path_factory.mktemp("coco_eval")
    gt = _ground_truth()
    (folder / "images").mkdir()
    for image in gt["images"]:
        pixels = np.zeros((IMAGE_SIDE, IMAGE_SIDE, 3), dtype=np.uint8)
        pixels[0, 0, 0] = image["id"]
        Image.fromarray(pixels).save(folder / "images" / image["file_name"])
    path = folder / "instances.json"
    path.write_text(json.dumps(gt))
    return gt, path, folder / "images"


def test_figures_equal_pycocotools_summarize(gt_files):
    gt, path, _ = gt_files
    results = _detections(gt)
    ours = evaluate_results(load_coco(path), results)
    expected = _by_hand(gt, results)
    assert list(ours)[:12] == list(METRIC_NAMES)
    np.testing.assert_array_equal(np.array([ours[name] for name in METRIC_NAMES]), expected)
    assert 0.2 < ours["AP50"] < 0.95  # a meaningful case: neither perfect nor empty


def test_custom_bins_equal_pycocotools_with_that_range(gt_files):
    gt, path, _ = gt_files
    results = _detections(gt, seed=3)
    bins = {"tiny": (0.0, 16.0**2), "huge": (64.0**2, 1e10)}
    ours = evaluate_results(load_coco(path), results, size_bins=bins)
    # pycocotools by hand: put each custom range in the place of 'small', whose figures summarize() reports as APs / ARs
    for name, (lo, hi) in bins.items():
        stats = _by_hand(gt, results, [[0, 1e10], [lo, hi], [32.0**2, 96.0**2], [96.0**2, 1e10]])
        assert ours[f"AP_{name}"] == stats[3]
        assert ours[f"AR_{name}"] == stats[9]
    # and the standard figures do not change when bins are added
    np.testing.assert_array_equal([ours[n] for n in METRIC_NAMES], _by_hand(gt, results))


class _ReplayDetector(nn.Module):
    """A fake detector that answers every image with fixed detections (read from pixel (0, 0) = image id)."""

    def __init__(self, detections: dict[int, dict]):
        super().__init__()
        self.detections = detections
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, images):
        outputs = []
        for image in images:
            image_id = int(round(float(image[0, 0, 0]) * 255))
            outputs.append({k: v.clone() for k, v in self.detections[image_id].items()})
        return outputs


def test_evaluate_runs_the_model_and_agrees_with_pycocotools(gt_files, tmp_path):
    gt, path, image_dir = gt_files
    dataset = CocoDetection(path, image_dir)
    results = _detections(gt, seed=5)
    per_image = {}
    for image in gt["images"]:
        mine = [r for r in results if r["image_id"] == image["id"]]
        boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in mine)], dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([dataset.category_id_to_label[r["category_id"]] for r in mine], dtype=torch.int64)
        scores = torch.tensor([r["score"] for r in mine], dtype=torch.float32)
        per_image[image["id"]] = {"boxes": boxes, "labels": labels, "scores": scores}
    results_path = tmp_path / "detections.json"
    metrics = evaluate(_ReplayDetector(per_image), dataset, {"tiny": (0, 256)}, batch_size=5, results_path=results_path)
    written = json.loads(results_path.read_text())
    assert len(written) == len(results)
    # the written json is what pycocotools scores; float32 boxes differ from the float64 ones by < 1e-4 px
    np.testing.assert_allclose([metrics[n] for n in METRIC_NAMES], _by_hand(gt, written), atol=0, rtol=0)
    np.testing.assert_allclose([metrics[n] for n in METRIC_NAMES], _by_hand(gt, results), atol=2e-3)
    assert "AP_tiny" in metrics and "AR_tiny" in metrics


def test_a_model_evaluated_on_a_file_with_its_categories_renumbered_maps_them_by_name(gt_files, tmp_path):
    gt, path, image_dir = gt_files
    trained_on = CocoDetection(path, image_dir)
    # perfect detections, labelled as a model trained on the original file labels them
    perfect = {}
    for image in gt["images"]:
        mine = [a for a in gt["annotations"] if a["image_id"] == image["id"] and not a["iscrowd"]]
        boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in mine)]).reshape(-1, 4)
        labels = torch.tensor([trained_on.category_id_to_label[a["category_id"]] for a in mine], dtype=torch.int64)
        perfect[image["id"]] = {"boxes": boxes, "labels": labels, "scores": torch.ones(len(mine))}
    model = _ReplayDetector(perfect)
    renumber = {c["id"]: 50 - c["id"] for c in gt["categories"]}  # reverses the sorted order
    other = {**gt, "categories": [{**c, "id": renumber[c["id"]]} for c in gt["categories"]],
             "annotations": [{**a, "category_id": renumber[a["category_id"]]} for a in gt["annotations"]]}
    (tmp_path / "renumbered.json").write_text(json.dumps(other))
    evaluated_on = CocoDetection(tmp_path / "renumbered.json", image_dir)
    mapping = label_map_for(dataset_categories(trained_on), evaluated_on)
    assert evaluate(model, evaluated_on, label_to_category_id=mapping)["AP50"] == pytest.approx(1.0)
    assert evaluate(model, evaluated_on)["AP50"] < 0.5  # the file's own sorted order names other classes
    renamed = {**gt, "categories": [{**c, "name": "thing"} if c["id"] == gt["categories"][0]["id"] else c
                                    for c in gt["categories"]]}
    (tmp_path / "renamed.json").write_text(json.dumps(renamed))
    with pytest.raises(ValueError, match="trained on the categories .*\\(missing: \\['a'\\]; not trained: \\['thing'\\]"):
        label_map_for(dataset_categories(trained_on), CocoDetection(tmp_path / "renamed.json", image_dir))
    assert label_map_for(None, evaluated_on) == evaluated_on.label_to_category_id  # old checkpoints: the file's order


def test_perfect_detections_score_one(gt_files):
    gt, path, _ = gt_files
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in gt["annotations"] if not a["iscrowd"]]
    metrics = evaluate_results(load_coco(path), results)
    for name in METRIC_NAMES:
        if name != "AR1":  # one detection per image cannot recall every object of an image with several
            assert metrics[name] == pytest.approx(1.0), name
    assert 0.3 < metrics["AR1"] < 1.0


def test_no_detections_give_zeros_not_a_crash(gt_files):
    gt, path, image_dir = gt_files
    metrics = evaluate_results(load_coco(path), [], size_bins={"tiny": (0, 256)})
    assert all(metrics[name] == 0.0 for name in METRIC_NAMES)
    assert metrics["AP_tiny"] == 0.0
    empty = {image["id"]: {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "scores": torch.zeros(0)}
             for image in gt["images"]}
    assert evaluate(_ReplayDetector(empty), CocoDetection(path, image_dir)) == {name: 0.0 for name in METRIC_NAMES}


def test_a_bin_without_ground_truth_is_minus_one_as_pycocotools(gt_files):
    gt, path, _ = gt_files
    metrics = evaluate_results(load_coco(path), _detections(gt), size_bins={"giant": (1e9, 1e10)})
    assert metrics["AP_giant"] == -1.0 and metrics["AR_giant"] == -1.0


def test_subset_of_images_is_evaluated_on_that_subset(gt_files):
    gt, path, image_dir = gt_files
    results = _detections(gt)
    subset = [1, 2, 3, 4]
    cocoeval = run_cocoeval(load_coco(path), [r for r in results if r["image_id"] in subset], image_ids=subset)
    assert cocoeval.params.imgIds == subset
    sub_gt = copy.deepcopy(gt)
    sub_gt["images"] = [i for i in gt["images"] if i["id"] in subset]
    sub_gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] in subset]
    expected = _by_hand(sub_gt, [r for r in results if r["image_id"] in subset])
    from sodlib.eval import summarize

    np.testing.assert_array_equal([summarize(cocoeval)[n] for n in METRIC_NAMES], expected)


def test_per_category_ap_is_pycocotools_restricted_to_one_category(gt_files):
    gt, path, _ = gt_files
    results = _detections(gt)
    rows = per_category_ap(run_cocoeval(load_coco(path), results))
    assert [row["name"] for row in rows] == sorted(c["name"] for c in gt["categories"])
    for row in rows:
        stats = _by_hand(gt, results, category_ids=[row["id"]])
        assert (row["AP"], row["AP50"], row["APs"]) == pytest.approx((stats[0], stats[1], stats[3]), abs=1e-12)
        assert row["objects"] == sum(1 for a in gt["annotations"] if a["category_id"] == row["id"] and not a["iscrowd"])


def test_coco_results_converts_xyxy_to_xywh_and_maps_labels():
    predictions = [{"image_id": 7, "boxes": torch.tensor([[10.0, 20.0, 14.5, 30.0]]), "labels": torch.tensor([2]),
                    "scores": torch.tensor([0.75])}]
    assert coco_results(predictions, {1: 3, 2: 10}) == [{"image_id": 7, "category_id": 10, "bbox": [10.0, 20.0, 4.5, 10.0], "score": 0.75}]


def test_bad_inputs_are_refused_with_the_field(gt_files):
    gt, path, _ = gt_files
    coco = load_coco(path)
    with pytest.raises(ValueError, match="size_bins\\['tiny'\\]"):
        evaluate_results(coco, [], size_bins={"tiny": (100, 10)})
    with pytest.raises(ValueError, match="COCOeval's own bins"):
        evaluate_results(coco, [], size_bins={"small": (0, 10)})
    with pytest.raises(ValueError, match="category ids"):
        evaluate_results(coco, [{"image_id": 1, "category_id": 77, "bbox": [0, 0, 5, 5], "score": 0.5}])
    with pytest.raises(ValueError, match="label_to_category_id"):
        coco_results([{"image_id": 1, "boxes": torch.zeros(1, 4), "labels": torch.tensor([9]), "scores": torch.ones(1)}], {1: 2})
    with pytest.raises(ValueError, match="'scores'"):
        coco_results([{"image_id": 1, "boxes": torch.zeros(1, 4), "labels": torch.tensor([1])}], {1: 2})
    with pytest.raises(ValueError, match="CocoDetection"):
        evaluate(_ReplayDetector({}), [torch.zeros(3, 4, 4)])


def test_the_old_engine_paths_still_work_for_one_release():
    import importlib
    import sys

    import sodlib.engine as engine
    import sodlib.eval as evaluation

    for name in ("METRIC_NAMES", "coco_results", "evaluate", "evaluate_results", "predict", "run_cocoeval", "summarize"):
        assert getattr(engine, name) is getattr(evaluation, name)
    for old, new in (("sodlib.engine.coco_eval", "sodlib.eval.coco_eval"), ("sodlib.engine.errors", "sodlib.eval.error_analysis")):
        sys.modules.pop(old, None)
        with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}"):
            module = importlib.import_module(old)
        assert set(module.__all__) == set(importlib.import_module(new).__all__)
        assert all(getattr(module, name) is getattr(importlib.import_module(new), name) for name in module.__all__)
