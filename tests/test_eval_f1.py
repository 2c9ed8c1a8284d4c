"""sodlib.eval.threshold_metrics: precision / recall / F1 per size bin at a score threshold, against counts
worked out by hand on a tiny ground truth."""
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

from sodlib.data import CocoDetection, generate_synthetic_coco
from sodlib.engine.config import TrainConfig
from sodlib.engine.runs import check_run_config, evaluate_trained_run, load_run_config, run_training
from sodlib.eval import METRIC_NAMES, evaluate, evaluate_results, f1_by_size
from tests.engine_fixtures import one_thread, tiny_run_config  # noqa: F401  (one_thread: a fixture of the run test)

SIDE = 200
CIRCLE, TRIANGLE = 1, 2

# Ground truth (bbox [x, y, w, h], area = w * h): small is area <= 32^2 = 1024, medium 1024..9216, large >= 9216,
# both edges inclusive (g8, area exactly 1024, is small and medium).
#   image 1: g1 circle small 400, g2 circle medium 2500, g3 triangle large 12100, g4 triangle small 256,
#            c5 circle crowd 3600
#   image 2: g6 triangle medium 1600, g7 circle small 576, g8 circle 1024 (small and medium)
OBJECTS = [
    (1, 1, CIRCLE, [10, 10, 20, 20], 0),
    (2, 1, CIRCLE, [50, 10, 50, 50], 0),
    (3, 1, TRIANGLE, [10, 80, 110, 110], 0),
    (4, 1, TRIANGLE, [150, 10, 16, 16], 0),
    (5, 1, CIRCLE, [130, 130, 60, 60], 1),
    (6, 2, TRIANGLE, [20, 20, 40, 40], 0),
    (7, 2, CIRCLE, [100, 100, 24, 24], 0),
    (8, 2, CIRCLE, [150, 150, 32, 32], 0),
]

# Detections (image, category, bbox, score) and what each is at score >= 0.5, IoU 0.5:
RESULTS = [
    (1, CIRCLE, [10, 10, 20, 20], 0.9),      # d1: finds g1 (TP small)
    (1, CIRCLE, [50, 10, 50, 50], 0.8),      # d2: finds g2 (TP medium)
    (1, CIRCLE, [52, 12, 50, 50], 0.7),      # d3: a duplicate (IoU 0.85 with g2, which d2 took first): FP, box 2500 medium
    (1, TRIANGLE, [10, 80, 110, 110], 0.95),  # d4: finds g3 (TP large)
    (1, CIRCLE, [150, 10, 16, 16], 0.85),    # d5: on g4 with the wrong class: FP, box 256 is small; g4 is missed
    (1, CIRCLE, [140, 140, 30, 30], 0.6),    # d6: inside the crowd c5 (intersection / its own area = 1): ignored, not a small FP
    (1, TRIANGLE, [150, 10, 16, 16], 0.3),   # d7: would find g4, but scores below 0.5: left out
    (2, TRIANGLE, [20, 20, 40, 40], 0.99),   # d8: finds g6 (TP medium)
    (2, TRIANGLE, [90, 0, 100, 100], 0.55),  # d9: nothing there: FP, box 10000 is large
    (2, CIRCLE, [150, 150, 32, 32], 0.5),    # d10: exactly at the threshold, kept: finds g8 (TP small and medium)
]                                            # nothing finds g7 (a miss, small)

# Extra bins: tiny holds g4 and d5 only; between (500..600) holds g7 only; wide (9500..11000) holds d9 only
# (no object); giant holds nothing.
EXTRA_BINS = {"tiny": (0, 300), "between": (500, 600), "wide": (9500, 11000), "giant": (200.0**2, 1e10)}

# By hand (N objects in the bin, TP, FP; P = TP / (TP + FP), R = TP / N, F1 = 2 P R / (P + R)):
#   all:     N 7 (g1 g2 g3 g4 g6 g7 g8), TP 5 (d1 d2 d4 d8 d10), FP 3 (d3 d5 d9): P 5/8, R 5/7,
#            F1 = 2 (5/8)(5/7) / (5/8 + 5/7) = (50/56) / (75/56) = 2/3
#   small:   N 4 (g1 g4 g7 g8), TP 2 (d1 d10), FP 1 (d5): P 2/3, R 1/2, F1 = (2/3) / (7/6) = 4/7
#   medium:  N 3 (g2 g6 g8), TP 3 (d2 d8 d10), FP 1 (d3): P 3/4, R 1, F1 = 1.5 / 1.75 = 6/7
#   large:   N 1 (g3), TP 1 (d4), FP 1 (d9): P 1/2, R 1, F1 = 1 / 1.5 = 2/3
#   tiny:    N 1 (g4), TP 0, FP 1 (d5): P 0, R 0, F1 0 (P + R = 0)
#   between: N 1 (g7), no detection counts here: P -1 (undefined), R 0, F1 0
#   wide:    N 0, FP 1 (d9): P 0, R -1, F1 -1 (no object to find)
#   giant:   nothing at all: P R F1 all -1
EXPECTED = {
    "P": 5 / 8, "R": 5 / 7, "F1": 2 / 3,
    "P_small": 2 / 3, "R_small": 1 / 2, "F1_small": 4 / 7,
    "P_medium": 3 / 4, "R_medium": 1.0, "F1_medium": 6 / 7,
    "P_large": 1 / 2, "R_large": 1.0, "F1_large": 2 / 3,
    "P_tiny": 0.0, "R_tiny": 0.0, "F1_tiny": 0.0,
    "P_between": -1.0, "R_between": 0.0, "F1_between": 0.0,
    "P_wide": 0.0, "R_wide": -1.0, "F1_wide": -1.0,
    "P_giant": -1.0, "R_giant": -1.0, "F1_giant": -1.0,
}


def _dataset_dict() -> dict:
    annotations = []
    for ann_id, image_id, category, (x, y, w, h), crowd in OBJECTS:
        segmentation = ({"counts": [0, SIDE * SIDE], "size": [SIDE, SIDE]} if crowd else
                        [[x, y, x + w, y, x + w, y + h, x, y + h]])
        annotations.append({"id": ann_id, "image_id": image_id, "category_id": category, "bbox": [float(v) for v in (x, y, w, h)],
                            "area": float(w * h), "iscrowd": crowd, "segmentation": segmentation})
    return {"images": [{"id": i, "file_name": f"{i}.png", "width": SIDE, "height": SIDE} for i in (1, 2)],
            "categories": [{"id": CIRCLE, "name": "circle"}, {"id": TRIANGLE, "name": "triangle"}],
            "annotations": annotations}


def _coco() -> COCO:
    coco = COCO()
    coco.dataset = _dataset_dict()
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _results() -> list[dict]:
    return [{"image_id": i, "category_id": c, "bbox": [float(v) for v in box], "score": s} for i, c, box, s in RESULTS]


def test_every_figure_equals_the_hand_count():
    figures = f1_by_size(_coco(), _results(), score_threshold=0.5, size_bins=EXTRA_BINS)
    assert list(figures)[:12] == ["P", "R", "F1", "P_small", "R_small", "F1_small", "P_medium", "R_medium", "F1_medium",
                                  "P_large", "R_large", "F1_large"]
    assert set(figures) == set(EXPECTED)
    for name, value in EXPECTED.items():
        assert figures[name] == pytest.approx(value, abs=1e-12), name


def test_default_bins_only_without_size_bins():
    figures = f1_by_size(_coco(), _results())
    assert set(figures) == {f"{kind}{suffix}" for kind in ("P", "R", "F1") for suffix in ("", "_small", "_medium", "_large")}
    assert figures["F1_small"] == pytest.approx(4 / 7)


def test_a_lower_threshold_lets_the_low_scoring_hit_in():
    # at 0.2, d7 (score 0.3) is kept; d5 (0.85) comes first but has the other class, so d7 takes g4 and d5 stays FP
    #   small: N 4, TP 3 (d1 d7 d10), FP 1 (d5): P 3/4, R 3/4, F1 3/4
    #   all: N 7, TP 6, FP 3: P 6/9, R 6/7, F1 = 2 * 6 / (2 * 6 + 3 + 1) = 12/16
    figures = f1_by_size(_coco(), _results(), score_threshold=0.2)
    assert (figures["P_small"], figures["R_small"], figures["F1_small"]) == pytest.approx((0.75, 0.75, 0.75))
    assert (figures["P"], figures["R"], figures["F1"]) == pytest.approx((6 / 9, 6 / 7, 0.75))
    # above every score: nothing is kept, so precision is undefined and nothing is found
    nothing = f1_by_size(_coco(), _results(), score_threshold=1.0)
    assert (nothing["P"], nothing["R"], nothing["F1"]) == (-1.0, 0.0, 0.0)
    assert f1_by_size(_coco(), [])["R_medium"] == 0.0


def test_the_iou_threshold_decides_a_shifted_hit():
    # without d2, the shifted d3 is g2's only candidate: IoU (48*48) / (2 * 2500 - 48*48) = 2304 / 2696 = 0.855
    #   IoU 0.5: medium N 3, TP 3 (d3 d8 d10), FP 0: P 1, R 1, F1 1
    #   IoU 0.9: d3 is a FP (its box 2500 is medium) and g2 a miss: TP 2, FP 1: P 2/3, R 2/3, F1 2/3
    results = [r for r in _results() if r["score"] != 0.8]
    loose = f1_by_size(_coco(), results, iou_threshold=0.5)
    strict = f1_by_size(_coco(), results, iou_threshold=0.9)
    assert (loose["P_medium"], loose["R_medium"], loose["F1_medium"]) == pytest.approx((1.0, 1.0, 1.0))
    assert (strict["P_medium"], strict["R_medium"], strict["F1_medium"]) == pytest.approx((2 / 3, 2 / 3, 2 / 3))


def test_image_ids_restrict_the_count():
    # image 2 only: N 3 (g6 g7 g8), TP 2 (d8 d10), FP 1 (d9): P 2/3, R 2/3, F1 2/3
    figures = f1_by_size(_coco(), _results(), image_ids=[2])
    assert (figures["P"], figures["R"], figures["F1"]) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    assert (figures["P_large"], figures["R_large"], figures["F1_large"]) == (0.0, -1.0, -1.0)  # d9, and no g3


def test_bad_arguments_are_refused_with_the_field():
    coco, results = _coco(), _results()
    for bad in (1.5, -0.1, float("nan"), True, "0.5"):
        with pytest.raises(ValueError, match=r"score_threshold=.* must be a detection score in \[0, 1\]"):
            f1_by_size(coco, results, score_threshold=bad)
    with pytest.raises(ValueError, match="iou_threshold"):
        f1_by_size(coco, results, iou_threshold=0)
    with pytest.raises(ValueError, match="one of COCOeval's own bins"):
        f1_by_size(coco, results, size_bins={"small": (0, 10)})
    with pytest.raises(ValueError, match="image ids that are not in the ground truth"):
        f1_by_size(coco, results + [{"image_id": 99, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0}])
    with pytest.raises(ValueError, match="category ids that are not in the ground truth"):
        f1_by_size(coco, results + [{"image_id": 1, "category_id": 7, "bbox": [0, 0, 1, 1], "score": 1.0}])
    with pytest.raises(ValueError, match=r"results\[0\] has no 'score'"):
        f1_by_size(coco, [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}])


def _random_case(seed: int) -> tuple[dict, list[dict]]:
    """Objects of every size, some crowds, three categories; jittered hits, wrong classes and stray boxes."""
    rng = np.random.default_rng(seed)
    images, annotations, results = [], [], []
    for image_id in range(1, 9):
        images.append({"id": image_id, "file_name": f"{image_id}.png", "width": 300, "height": 300})
        for _ in range(int(rng.integers(0, 8))):
            w, h = np.exp(rng.uniform(np.log(4), np.log(200), size=2))
            x, y = rng.uniform(0, 300 - w), rng.uniform(0, 300 - h)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(rng.integers(1, 4)),
                                "bbox": [x, y, w, h], "area": w * h * rng.uniform(0.6, 1.0),
                                "iscrowd": int(rng.random() < 0.1)})
            if rng.random() < 0.8:
                jitter = rng.normal(0, 0.1, size=4) * np.array([w, h, w, h])
                category = annotations[-1]["category_id"] if rng.random() < 0.85 else int(rng.integers(1, 4))
                for _ in range(int(rng.integers(1, 3))):  # sometimes a duplicate
                    results.append({"image_id": image_id, "category_id": category, "score": float(rng.random()),
                                    "bbox": [x + jitter[0], y + jitter[1], max(1.0, w + jitter[2]), max(1.0, h + jitter[3])]})
        for _ in range(int(rng.integers(0, 4))):
            w, h = np.exp(rng.uniform(np.log(4), np.log(120), size=2))
            results.append({"image_id": image_id, "category_id": int(rng.integers(1, 4)), "score": float(rng.random()),
                            "bbox": [float(rng.uniform(0, 300 - w)), float(rng.uniform(0, 300 - h)), float(w), float(h)]})
    return {"images": images, "annotations": annotations, "categories": [{"id": c, "name": str(c)} for c in (1, 2, 3)]}, results


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_overall_counts_equal_cocoeval_matching(seed):
    """Over all sizes, the TP / FP / object counts are COCOeval's own matching (area range all, IoU 0.5, no cap
    on the detections), read from its evalImgs: TP = matched and not ignored, FP = unmatched and not ignored."""
    gt, results = _random_case(seed)
    coco = COCO()
    coco.dataset = copy.deepcopy(gt)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        kept = [r for r in results if r["score"] >= 0.4]
        cocoeval = COCOeval(coco, coco.loadRes(copy.deepcopy(kept)), "bbox")
        cocoeval.params.iouThrs = np.array([0.5])
        cocoeval.params.areaRng, cocoeval.params.areaRngLbl = [[0, 1e10]], ["all"]
        cocoeval.params.maxDets = [10000]
        cocoeval.evaluate()
    tp = fp = objects = 0
    for image in filter(None, cocoeval.evalImgs):
        matched, ignored = np.asarray(image["dtMatches"][0]) > 0, np.asarray(image["dtIgnore"][0]).astype(bool)
        tp += int((matched & ~ignored).sum())
        fp += int((~matched & ~ignored).sum())
        objects += int((~np.asarray(image["gtIgnore"]).astype(bool)).sum())
    assert tp > 5 and fp > 5  # a case with something on both sides
    figures = f1_by_size(coco, results, score_threshold=0.4)
    assert (figures["P"], figures["R"]) == pytest.approx((tp / (tp + fp), tp / objects), abs=1e-12)


class _ReplayDetector(nn.Module):
    """Answers every image with fixed detections, told apart by pixel (0, 0) = image id / 255."""

    def __init__(self, detections: dict[int, dict[str, torch.Tensor]]):
        super().__init__()
        self.detections = detections
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, images):
        return [{k: v.clone() for k, v in self.detections[int(round(float(image[0, 0, 0]) * 255))].items()} for image in images]


class _Refuses(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, images):
        raise AssertionError("the threshold must be refused before the model runs")


@pytest.fixture
def dataset(tmp_path):
    for image_id in (1, 2):
        pixels = np.zeros((SIDE, SIDE, 3), dtype=np.uint8)
        pixels[0, 0, 0] = image_id
        Image.fromarray(pixels).save(tmp_path / f"{image_id}.png")
    return CocoDetection(_coco(), tmp_path)


def _replay(dataset: CocoDetection) -> _ReplayDetector:
    per_image = {}
    for image_id in (1, 2):
        mine = [r for r in RESULTS if r[0] == image_id]
        per_image[image_id] = {
            "boxes": torch.tensor([[x, y, x + w, y + h] for _, _, (x, y, w, h), _ in mine], dtype=torch.float32),
            "labels": torch.tensor([dataset.category_id_to_label[c] for _, c, _, _ in mine], dtype=torch.int64),
            "scores": torch.tensor([s for *_, s in mine], dtype=torch.float32)}
    return _ReplayDetector(per_image)


def test_evaluate_carries_the_f1_keys_only_when_asked(dataset):
    model = _replay(dataset)
    metrics = evaluate(model, dataset, EXTRA_BINS, batch_size=2, f1_score_threshold=0.5)
    for name, value in EXPECTED.items():
        assert metrics[name] == pytest.approx(value, abs=1e-6), name
    # the AP / AR figures are those without the threshold
    plain = evaluate(model, dataset, EXTRA_BINS, batch_size=2)
    assert not set(EXPECTED) & set(plain)
    assert {name: metrics[name] for name in plain} == plain
    assert [plain[n] for n in METRIC_NAMES] == [evaluate_results(_coco(), _results(), size_bins=EXTRA_BINS)[n]
                                                for n in METRIC_NAMES]


def test_evaluate_refuses_a_bad_threshold_before_running_the_model(dataset):
    with pytest.raises(ValueError, match=r"f1_score_threshold=2 must be a detection score in \[0, 1\]"):
        evaluate(_Refuses(), dataset, f1_score_threshold=2)


def test_run_configs_take_the_threshold_from_evaluate():
    config = check_run_config({"evaluate": {"f1_score_threshold": 0.5, "size_bins": {"tiny": [0, 256]}}})
    assert config["evaluate"]["f1_score_threshold"] == 0.5
    with pytest.raises(ValueError, match=r"\[evaluate\] f1_score_threshold=1.5 must be a detection score"):
        check_run_config({"evaluate": {"f1_score_threshold": 1.5}})
    with pytest.raises(ValueError, match="unknown key 'f1_threshold' \\(did you mean 'f1_score_threshold'\\?\\)"):
        check_run_config({"evaluate": {"f1_threshold": 0.5}})
    assert TrainConfig(f1_score_threshold=0.25).f1_score_threshold == 0.25
    assert TrainConfig().f1_score_threshold is None
    with pytest.raises(ValueError, match="f1_score_threshold=-1"):
        TrainConfig(f1_score_threshold=-1)


def test_the_input_is_not_changed():
    coco, results = _coco(), _results()
    before = copy.deepcopy(results)
    f1_by_size(coco, results, size_bins=EXTRA_BINS)
    assert results == before and coco.dataset == _dataset_dict()


def test_a_run_configuration_evaluates_with_the_threshold(tmp_path, one_thread):
    """``[evaluate] f1_score_threshold`` reaches the training run's validation and a re-evaluation of its weights."""
    annotations = generate_synthetic_coco(tmp_path / "data", 4, seed=2, image_size=96, workers=1, progress=False)
    text = tiny_run_config(annotations, tmp_path / "data" / "train", train_extra="checkpoint_every = 0")
    path = tmp_path / "run.toml"
    path.write_text(text + "f1_score_threshold = 0.0\n")  # [evaluate] is the template's last table
    config = load_run_config(path)
    keys = {f"{kind}{suffix}" for kind in ("P", "R", "F1") for suffix in ("", "_small", "_medium", "_large", "_tiny")}
    summary = run_training(config, tmp_path / "run")
    assert keys <= set(summary["metrics"])
    assert keys <= set(json.loads((tmp_path / "run" / "metrics.json").read_text()))
    assert json.loads((tmp_path / "run" / "config.json").read_text())["f1_score_threshold"] == 0.0
    again = evaluate_trained_run(config, tmp_path / "run", {})
    assert keys <= set(again["metrics"])
    assert {k: again["metrics"][k] for k in keys} == pytest.approx({k: summary["metrics"][k] for k in keys})
