"""Training and evaluation: the training loop, COCOeval per size bin, checkpoints, run folders."""
from sodlib.engine.coco_eval import METRIC_NAMES, coco_results, evaluate_results, run_cocoeval, summarize
from sodlib.engine.config import TrainConfig, read_config_file
from sodlib.engine.evaluate import evaluate, predict
from sodlib.engine.train import TrainResult, learning_rate_factor, train

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
