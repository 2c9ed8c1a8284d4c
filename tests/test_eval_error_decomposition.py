"""TIDE-style error decomposition per size bin: hand-derived counts and gains, AP50 held to pycocotools, and the
figure that draws it."""
from __future__ import annotations

import contextlib
import copy
import io
import time

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from matplotlib.figure import Figure
from pycocotools.coco import COCO

from sodlib.eval import ERROR_TYPES, error_decomposition, run_cocoeval, summarize
from sodlib.eval.error_decomposition import _decompose
from sodlib.viz.error_decomposition import plot_error_decomposition

BINS = ("all", "small", "medium", "large")
TINY = {"tiny": (0.0, 16.0**2)}


def _coco(annotations: list[tuple], images: int = 1, categories: tuple[int, ...] = (1, 2)) -> tuple[COCO, dict]:
    """``annotations``: ``(image_id, category_id, [x, y, w, h])`` or ``(..., area, iscrowd)``; ids from 1."""
    records = []
    for index, annotation in enumerate(annotations):
        image_id, category_id, box = annotation[:3]
        area = annotation[3] if len(annotation) > 3 else float(box[2] * box[3])
        crowd = annotation[4] if len(annotation) > 4 else 0
        records.append({"id": index + 1, "image_id": image_id, "category_id": category_id, "bbox": [float(v) for v in box],
                        "area": float(area), "iscrowd": crowd})
    dataset = {"images": [{"id": i, "width": 400, "height": 400, "file_name": f"{i}.png"} for i in range(1, images + 1)],
               "categories": [{"id": c, "name": f"c{c}"} for c in categories], "annotations": records}
    coco = COCO()
    coco.dataset = copy.deepcopy(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco, dataset


def _det(image_id: int, category_id: int, box, score: float) -> dict:
    return {"image_id": image_id, "category_id": category_id, "bbox": [float(v) for v in box], "score": score}


def _coco_ap50(coco: COCO, results: list[dict], size_bins=None) -> dict[str, float]:
    """pycocotools' AP at IoU 0.5, 100 detections, for every area range (mean over the valid categories)."""
    cocoeval = run_cocoeval(coco, results, size_bins=size_bins)
    params = cocoeval.params
    figures = {}
    for a, label in enumerate(params.areaRngLbl):
        values = cocoeval.eval["precision"][0, :, :, a, -1]
        figures[label] = float(np.mean(values[values > -1])) if (values > -1).any() else -1.0
    return figures


def _only(decomposition: dict, bin_name: str = "all", **expected: int) -> None:
    """The bin's counts are ``expected`` and 0 for every other type."""
    counts = decomposition[bin_name]["counts"]
    assert list(counts) == list(ERROR_TYPES)
    assert counts == {kind: expected.get(kind, 0) for kind in ERROR_TYPES}


# a found object next to each case, so that AP50 is neither 0 nor 1: recall 1/2 at precision 1 gives 51 / 101
FOUND = (1, 1, [200, 200, 20, 20])
FOUND_DET = _det(1, 1, [200, 200, 20, 20], 0.8)
HALF = 51 / 101


def test_a_perfect_detector_has_no_errors():
    coco, _ = _coco([(1, 1, [0, 0, 20, 20]), (1, 2, [50, 50, 40, 40]), (1, 1, [100, 100, 120, 120])])
    results = [_det(1, a["category_id"], a["bbox"], 0.9) for a in coco.dataset["annotations"]]
    decomposition = error_decomposition(coco, results)
    assert list(decomposition) == list(BINS)
    for name in BINS:
        _only(decomposition, name)
        assert decomposition[name]["AP50"] == pytest.approx(1.0)  # 1 / (1 + eps), as pycocotools
        assert decomposition[name]["dAP"] == {kind: 0.0 for kind in ERROR_TYPES}
    assert decomposition["all"]["objects"] == decomposition["all"]["true_positives"] == 3
    assert decomposition["small"]["objects"] == decomposition["medium"]["objects"] == decomposition["large"]["objects"] == 1


def test_classification_error_is_fixed_by_relabelling():
    # class 2 on a class-1 object, IoU 1: a classification error; the object is explained, not missed
    coco, _ = _coco([(1, 1, [0, 0, 20, 20]), FOUND])
    decomposition = error_decomposition(coco, [_det(1, 2, [0, 0, 20, 20], 0.9), FOUND_DET])
    _only(decomposition, classification=1)
    assert decomposition["all"]["AP50"] == pytest.approx(HALF)
    assert decomposition["all"]["dAP"]["classification"] == pytest.approx(1 - HALF)  # relabelled: a TP, recall 1
    assert decomposition["all"]["dAP"]["missed"] == 0.0


def test_localisation_error_is_fixed_by_the_objects_box():
    # same class, IoU 160 / 400 = 0.4 (between 0.1 and 0.5)
    coco, _ = _coco([(1, 1, [0, 0, 20, 20]), FOUND])
    decomposition = error_decomposition(coco, [_det(1, 1, [0, 0, 20, 8], 0.9), FOUND_DET])
    _only(decomposition, localisation=1)
    # FP (0.9) then TP (0.8): precision 1/2 up to recall 1/2, so AP = 51 / 101 * 1/2; fixed: two TPs, AP 1
    assert decomposition["all"]["AP50"] == pytest.approx(HALF / 2)
    assert decomposition["all"]["dAP"]["localisation"] == pytest.approx(1 - HALF / 2)


def test_both_error_explains_no_object():
    # class 2, IoU 0.4 with a class-1 object: both wrong; dropping it does not find the object, which stays missed
    coco, _ = _coco([(1, 1, [0, 0, 20, 20]), FOUND])
    decomposition = error_decomposition(coco, [_det(1, 2, [0, 0, 20, 8], 0.9), FOUND_DET])
    _only(decomposition, both=1, missed=1)
    assert decomposition["all"]["AP50"] == pytest.approx(HALF)
    assert decomposition["all"]["dAP"]["both"] == 0.0  # class 2 has no objects: its FPs do not count in AP
    assert decomposition["all"]["dAP"]["missed"] == pytest.approx(1 - HALF)  # one object left, found


def test_duplicate_ranked_before_a_true_positive():
    # TP (0.9), duplicate of it (0.85, IoU 0.9025), TP (0.8): precision 1 to recall 1/2, then 2/3 to recall 1
    coco, _ = _coco([(1, 1, [0, 0, 20, 20]), FOUND])
    results = [_det(1, 1, [0, 0, 20, 20], 0.9), _det(1, 1, [1, 1, 19, 19], 0.85), FOUND_DET]
    decomposition = error_decomposition(coco, results)
    _only(decomposition, duplicate=1)
    expected = (51 + 50 * 2 / 3) / 101
    assert decomposition["all"]["AP50"] == pytest.approx(expected)
    assert decomposition["all"]["dAP"]["duplicate"] == pytest.approx(1 - expected)


def test_background_error_and_its_threshold():
    coco, _ = _coco([FOUND])
    decomposition = error_decomposition(coco, [_det(1, 1, [0, 0, 20, 20], 0.9), FOUND_DET])
    _only(decomposition, background=1)
    assert decomposition["all"]["AP50"] == pytest.approx(0.5)  # FP then TP: precision 1/2 at every recall
    assert decomposition["all"]["dAP"]["background"] == pytest.approx(0.5)
    # IoU 0.4 with the object: background below background_iou=0.5, localisation at the default 0.1
    near = _det(1, 1, [200, 200, 20, 8], 0.9)
    _only(error_decomposition(coco, [near], foreground_iou=0.6, background_iou=0.5), background=1, missed=1)
    _only(error_decomposition(coco, [near]), localisation=1)


def test_missed_object_is_fixed_by_removing_it():
    coco, _ = _coco([(1, 1, [0, 0, 20, 20]), FOUND])
    decomposition = error_decomposition(coco, [FOUND_DET])
    _only(decomposition, missed=1)
    assert decomposition["all"]["dAP"]["missed"] == pytest.approx(1 - HALF)
    assert decomposition["all"]["dAP"]["localisation"] == 0.0


def test_precedence_localisation_before_classification_and_duplicate():
    # IoU 0.4 with a class-1 object and 1.0 with a class-2 object: TIDE tests localisation first
    coco, _ = _coco([(1, 1, [0, 0, 20, 20]), (1, 2, [0, 0, 20, 8])])
    _only(error_decomposition(coco, [_det(1, 1, [0, 0, 20, 8], 0.9)]), localisation=1, missed=1)
    # a duplicate of its own class that also sits on another class's object: classification before duplicate
    coco, _ = _coco([(1, 1, [0, 0, 20, 20]), (1, 2, [0, 0, 20, 20])])
    results = [_det(1, 1, [0, 0, 20, 20], 0.9), _det(1, 2, [0, 0, 20, 20], 0.95), _det(1, 1, [0, 0, 20, 20], 0.5)]
    _only(error_decomposition(coco, results), classification=1)
    # the classification fix of a detection whose object is already found would make a duplicate: it is dropped
    coco, _ = _coco([(1, 1, [0, 0, 20, 20])])
    decomposition = error_decomposition(coco, [_det(1, 1, [0, 0, 20, 20], 0.9), _det(1, 2, [0, 0, 20, 20], 0.95)])
    _only(decomposition, classification=1)
    assert decomposition["all"]["AP50"] == pytest.approx(1.0) and decomposition["all"]["dAP"]["classification"] == 0.0


def test_two_localisation_errors_on_one_object_repair_it_once():
    coco, _ = _coco([(1, 1, [0, 0, 20, 20])])
    outcome = _decompose(coco, [_det(1, 1, [0, 0, 20, 8], 0.9), _det(1, 1, [0, 12, 20, 8], 0.7)])["all"]
    assert outcome.repaired.tolist() == [True, False]  # the higher-scored one takes the object, the other is dropped
    assert outcome.ap(("localisation",)) == pytest.approx(1.0)


def test_size_bins_ignore_what_cocoeval_ignores():
    # a large object (area 14400) with a large localisation error (box 120 x 300, IoU 0.4) and a small object missed
    coco, _ = _coco([(1, 1, [0, 0, 120, 120]), (1, 1, [300, 300, 10, 10])])
    results = [_det(1, 1, [0, 0, 120, 300], 0.9)]
    decomposition = error_decomposition(coco, results, size_bins=TINY)
    _only(decomposition, "all", localisation=1, missed=1)
    _only(decomposition, "large", localisation=1)
    _only(decomposition, "small", missed=1)  # the large error is not counted in small (its box area is 36000)
    _only(decomposition, "tiny", missed=1)
    assert decomposition["medium"]["objects"] == 0 and decomposition["medium"]["AP50"] == -1.0
    assert decomposition["medium"]["dAP"] == {kind: -1.0 for kind in ERROR_TYPES}
    assert decomposition["small"]["detections"] == 0 and decomposition["large"]["detections"] == 1
    # the same error with a box too small for large: COCOeval ignores it there, so the large object is missed
    decomposition = error_decomposition(coco, [_det(1, 1, [0, 0, 120, 48], 0.9)])
    _only(decomposition, "large", missed=1)
    _only(decomposition, "medium", localisation=1)  # its box (5760) is medium: an FP there, as COCOeval counts it
    assert decomposition["medium"]["AP50"] == -1.0  # ... though medium has no object to score
    # a detection that found a large object is ignored in small even though its box is small: area field decides
    coco, _ = _coco([(1, 1, [0, 0, 20, 20], 5000.0)])
    decomposition = error_decomposition(coco, [_det(1, 1, [0, 0, 20, 20], 0.9)])
    assert decomposition["small"]["detections"] == 0 and decomposition["medium"]["true_positives"] == 1
    # a miss on the edge 32^2 counts in small and in medium, both edges inclusive
    coco, _ = _coco([(1, 1, [0, 0, 32, 32])])
    decomposition = error_decomposition(coco, [])
    assert decomposition["small"]["counts"]["missed"] == decomposition["medium"]["counts"]["missed"] == 1


def test_crowd_regions_are_neither_found_nor_missed():
    coco, _ = _coco([(1, 1, [0, 0, 100, 100], 10000.0, 1), FOUND])
    results = [_det(1, 1, [10, 10, 20, 20], 0.95),   # inside the crowd region of its class: ignored
               _det(1, 2, [10, 10, 20, 20], 0.9),    # another class on it: a background error (crowds name no class error)
               FOUND_DET]
    decomposition = error_decomposition(coco, results)
    _only(decomposition, background=1)
    assert decomposition["all"]["objects"] == 1 and decomposition["all"]["detections"] == 2
    assert decomposition["all"]["AP50"] == _coco_ap50(coco, results)["all"] == pytest.approx(1.0)


def test_empty_results_miss_everything():
    coco, _ = _coco([(1, 1, [0, 0, 20, 20]), (1, 2, [100, 100, 50, 50]), (1, 2, [0, 0, 10, 10], 100.0, 1)])
    decomposition = error_decomposition(coco, [])
    _only(decomposition, missed=2)
    assert decomposition["all"]["AP50"] == 0.0 and decomposition["all"]["dAP"]["missed"] == 1.0
    assert decomposition["all"]["dAP"]["background"] == 0.0
    _only(decomposition, "small", missed=1)
    assert decomposition["large"]["AP50"] == -1.0


def _random_case(seed: int, images: int = 12, per_image: int = 40, side: float = 300.0) -> tuple[COCO, list[dict]]:
    """Objects of every size (a few crowds), detections jittered around them (some of the wrong class) and random."""
    rng = np.random.default_rng(seed)
    annotations, results = [], []
    for image_id in range(1, images + 1):
        mine = []
        for _ in range(int(rng.integers(0, 10))):
            w, h = np.exp(rng.uniform(np.log(3), np.log(150), size=2))
            box = [float(rng.uniform(0, side - w)), float(rng.uniform(0, side - h)), float(w), float(h)]
            mine.append((image_id, int(rng.integers(1, 5)), box, float(w * h * rng.uniform(0.6, 1.0)), int(rng.random() < 0.05)))
        annotations += mine
        for _ in range(per_image):
            if mine and rng.random() < 0.6:
                _, category, (x, y, w, h), _, _ = mine[int(rng.integers(len(mine)))]
                jitter = rng.normal(0, 0.25, size=4) * np.array([w, h, w, h])
                box = [x + jitter[0], y + jitter[1], max(1.0, w + jitter[2]), max(1.0, h + jitter[3])]
                category = category if rng.random() < 0.8 else int(rng.integers(1, 5))
            else:
                w, h = np.exp(rng.uniform(np.log(3), np.log(150), size=2))
                box, category = [rng.uniform(0, side - w), rng.uniform(0, side - h), w, h], int(rng.integers(1, 5))
            results.append(_det(image_id, category, box, float(rng.uniform())))
    coco, _ = _coco(annotations, images=images, categories=(1, 2, 3, 4))
    return coco, results


@pytest.mark.parametrize("seed", [3, 4])
def test_ap50_and_every_fix_equal_pycocotools(seed):
    coco, results = _random_case(seed)
    decomposition = error_decomposition(coco, results, size_bins=TINY)
    expected = _coco_ap50(coco, results, size_bins=TINY)
    assert decomposition["all"]["AP50"] == pytest.approx(summarize(run_cocoeval(coco, results))["AP50"], abs=1e-12)
    outcomes = _decompose(coco, results, size_bins=TINY)
    data = outcomes["all"].data
    for name, figures in decomposition.items():
        assert figures["AP50"] == pytest.approx(expected[name], abs=1e-12)
        counts = figures["counts"]
        assert sum(counts[kind] for kind in ERROR_TYPES[:5]) == figures["detections"] - figures["true_positives"]
        if figures["AP50"] == -1:
            continue
        assert all(gain >= -1e-12 for gain in figures["dAP"].values())
        assert outcomes[name].ap(ERROR_TYPES) == pytest.approx(1.0)  # fixing every type leaves a perfect detector
        # each fix against pycocotools on the results / ground truth modified the same way
        outcome = outcomes[name]
        for k, kind in enumerate(ERROR_TYPES[:5]):
            modified, dropped = copy.deepcopy(results), set()
            for d in np.flatnonzero(outcome.errors(k)):
                record = modified[data.det_result[d]]
                if outcome.repaired[d]:
                    annotation = coco.anns[int(data.gt_id[data.det_target[d]])]
                    record["category_id" if kind == "classification" else "bbox"] = copy.deepcopy(
                        annotation["category_id" if kind == "classification" else "bbox"])
                else:
                    dropped.add(int(data.det_result[d]))
            modified = [r for i, r in enumerate(modified) if i not in dropped]
            assert figures["AP50"] + figures["dAP"][kind] == pytest.approx(_coco_ap50(coco, modified, TINY)[name], abs=1e-9), kind
        missed = set(data.gt_id[outcome.missed].tolist())
        fewer, _ = _coco([(a["image_id"], a["category_id"], a["bbox"], a["area"], a["iscrowd"])
                          for a in coco.dataset["annotations"] if a["id"] not in missed], images=12, categories=(1, 2, 3, 4))
        assert figures["AP50"] + figures["dAP"]["missed"] == pytest.approx(_coco_ap50(fewer, results, TINY)[name], abs=1e-9)
    assert sum(decomposition["all"]["counts"].values()) > 50  # a meaningful case


def test_image_ids_and_max_detections_follow_cocoeval():
    coco, results = _random_case(5, images=6, per_image=30)
    cocoeval = run_cocoeval(coco, results, image_ids=[2, 4, 5])
    assert error_decomposition(coco, results, image_ids=[5, 4, 2])["all"]["AP50"] == pytest.approx(summarize(cocoeval)["AP50"], abs=1e-12)
    coco, _ = _coco([(1, 1, [0, 0, 20, 20])])
    results = [_det(1, 1, [100, 100, 10, 10], 0.9), _det(1, 1, [0, 0, 20, 20], 0.5)]  # the TP is second
    assert error_decomposition(coco, results, max_detections=1)["all"]["counts"] == {
        kind: int(kind in ("background", "missed")) for kind in ERROR_TYPES}


def test_fast_enough_for_a_notebook():
    coco, results = _random_case(6, images=40, per_image=200)
    start = time.perf_counter()
    error_decomposition(coco, results, size_bins={"tiny": (0.0, 256.0), "very_small": (0.0, 144.0)})
    assert time.perf_counter() - start < 10.0  # about 0.3 s here


@pytest.mark.parametrize("kwargs, field", [
    ({"foreground_iou": 0.5, "background_iou": 0.5}, "background_iou"),
    ({"foreground_iou": 1.2}, "foreground_iou"),
    ({"background_iou": 0.0}, "background_iou"),
    ({"max_detections": 0}, "max_detections"),
    ({"size_bins": {"small": (0, 10)}}, "size_bins"),
    ({"size_bins": {"tiny": (100, 10)}}, "size_bins"),
    ({"image_ids": [1, 99]}, "image_ids"),
])
def test_bad_arguments_name_the_field(kwargs, field):
    coco, _ = _coco([(1, 1, [0, 0, 20, 20])])
    with pytest.raises(ValueError, match=field):
        error_decomposition(coco, [_det(1, 1, [0, 0, 20, 20], 0.9)], **kwargs)


@pytest.mark.parametrize("record, message", [
    ({"image_id": 7, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}, "image ids"),
    ({"image_id": 1, "category_id": 9, "bbox": [0, 0, 1, 1], "score": 0.5}, "category ids"),
    ({"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}, "'score'"),
    ({"image_id": 1, "category_id": 1, "bbox": [0, 0, 1], "score": 0.5}, "bbox"),
])
def test_bad_results_are_refused(record, message):
    coco, _ = _coco([(1, 1, [0, 0, 20, 20])])
    with pytest.raises(ValueError, match=message):
        error_decomposition(coco, [record])


def test_plot_draws_one_panel_per_bin_and_one_segment_per_row_and_type():
    coco, results = _random_case(3)
    decompositions = {"baseline": error_decomposition(coco, results, size_bins=TINY),
                      "half": error_decomposition(coco, results[::2], size_bins=TINY)}
    for value in ("dAP", "counts"):
        figure = plot_error_decomposition(decompositions, bins=("tiny", "small", "all"), value=value)
        assert isinstance(figure, Figure)
        assert len(figure.axes) == 3
        for ax in figure.axes:
            assert len(ax.patches) == len(decompositions) * len(ERROR_TYPES)
        assert [t.get_text() for t in figure.legends[0].get_texts()] == list(ERROR_TYPES)
        matplotlib.pyplot.close(figure)
    counts = plot_error_decomposition(decompositions, bins=("all",), value="counts")
    widths = sorted(round(p.get_width()) for p in counts.axes[0].patches[:2])  # the classification segments
    assert widths == sorted(d["all"]["counts"]["classification"] for d in decompositions.values())
    matplotlib.pyplot.close(counts)


def test_plot_refuses_a_missing_bin_and_a_bad_value():
    coco, _ = _coco([(1, 1, [0, 0, 20, 20])])
    decompositions = {"baseline": error_decomposition(coco, [])}
    with pytest.raises(ValueError, match="'tiny'"):
        plot_error_decomposition(decompositions)
    with pytest.raises(ValueError, match="value"):
        plot_error_decomposition(decompositions, bins=("all",), value="AP")
    with pytest.raises(ValueError, match="empty"):
        plot_error_decomposition({}, bins=("all",))
    figure = plot_error_decomposition(decompositions, bins=("all", "large"))  # large has no objects: -1 drawn as 0
    assert len(figure.axes) == 2
    matplotlib.pyplot.close(figure)
