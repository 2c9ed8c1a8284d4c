"""Training: the training loop, checkpoints, run folders and experiments.

Evaluation lives in :mod:`sodlib.eval`; its names are re-exported here for one release
(``from sodlib.engine import evaluate`` keeps working; new code imports them from ``sodlib.eval``), and the
modules ``sodlib.engine.coco_eval`` and ``sodlib.engine.errors`` forward to their new places with a
deprecation warning. (``sodlib.engine.evaluate`` is the function, as it always was here.)
"""
from sodlib.engine.config import TrainConfig, read_config_file
from sodlib.engine.train import TrainResult, learning_rate_factor, train
from sodlib.eval import METRIC_NAMES, coco_results, evaluate, evaluate_results, predict, run_cocoeval, summarize

__all__ = [
    "METRIC_NAMES",
    "TrainConfig",
    "TrainResult",
    "coco_results",
    "evaluate",
    "evaluate_results",
    "learning_rate_factor",
    "predict",
    "read_config_file",
    "run_cocoeval",
    "summarize",
    "train",
]
