"""Evaluation of detectors: COCO AP / AR per size bin, and which detections are right or wrong.

- :mod:`sodlib.eval.coco_eval`: pycocotools' ``COCOeval`` without printing, with extra size bins;
  :func:`precision_recall_by_bin` for the PR curves, :func:`per_category_ap` for the table per class.
- :mod:`sodlib.eval.evaluate`: run a detector over a dataset (:func:`predict`) and score it (:func:`evaluate`).
- :mod:`sodlib.eval.error_analysis`: per image, true positives, false positives and misses by COCOeval's rule
  (:func:`match_image`), for :func:`sodlib.viz.detection.plot_detection_errors` to draw.
"""
from sodlib.eval.coco_eval import (METRIC_NAMES, coco_results, evaluate_results, per_category_ap, precision_recall_by_bin,
                                   run_cocoeval, summarize)
from sodlib.eval.error_analysis import ImageErrors, match_image
from sodlib.eval.evaluate import bare_model, evaluate, predict, predict_one

__all__ = [
    "METRIC_NAMES",
    "ImageErrors",
    "bare_model",
    "coco_results",
    "evaluate",
    "evaluate_results",
    "match_image",
    "per_category_ap",
    "precision_recall_by_bin",
    "predict",
    "predict_one",
    "run_cocoeval",
    "summarize",
]
