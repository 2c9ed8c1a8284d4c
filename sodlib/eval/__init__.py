"""Evaluation of detectors: COCO AP / AR per size bin, and which detections are right or wrong.

- :mod:`sodlib.eval.coco_eval`: pycocotools' ``COCOeval`` without printing, with extra size bins;
  :func:`precision_recall_by_bin` for the PR curves, :func:`per_category_ap` for the table per class.
- :mod:`sodlib.eval.evaluate`: run a detector over a dataset (:func:`predict`) and score it (:func:`evaluate`).
- :mod:`sodlib.eval.error_analysis`: per image, true positives, false positives and misses by COCOeval's rule
  (:func:`match_image`), for :func:`sodlib.viz.detection.plot_detection_errors` to draw.
- :mod:`sodlib.eval.error_decomposition`: TIDE's error types per size bin and the AP50 each fix adds
  (:func:`error_decomposition`), for :func:`sodlib.viz.error_decomposition.plot_error_decomposition` to draw.
- :mod:`sodlib.eval.threshold_metrics`: precision / recall / F1 per size bin of the detections above one score
  threshold (:func:`f1_by_size`), the traffic-sign protocol's figures.
- :mod:`sodlib.eval.level_recall`: recall per bin of the resized RoI side with the FPN / EFPN level each bin is
  pooled from (:func:`recall_by_size`), EFPN's Fig. 1.
"""
from sodlib.eval.coco_eval import (METRIC_NAMES, coco_results, evaluate_results, per_category_ap, precision_recall_by_bin,
                                   read_results, run_cocoeval, summarize)
from sodlib.eval.error_analysis import ImageErrors, match_image
from sodlib.eval.error_decomposition import ERROR_TYPES, error_decomposition
from sodlib.eval.evaluate import bare_model, evaluate, predict, predict_one
from sodlib.eval.level_recall import recall_by_size, recall_by_size_from_predictions
from sodlib.eval.threshold_metrics import check_score_threshold, f1_by_size

__all__ = [
    "ERROR_TYPES",
    "METRIC_NAMES",
    "ImageErrors",
    "bare_model",
    "check_score_threshold",
    "coco_results",
    "error_decomposition",
    "evaluate",
    "evaluate_results",
    "f1_by_size",
    "match_image",
    "per_category_ap",
    "precision_recall_by_bin",
    "predict",
    "predict_one",
    "read_results",
    "recall_by_size",
    "recall_by_size_from_predictions",
    "run_cocoeval",
    "summarize",
]
