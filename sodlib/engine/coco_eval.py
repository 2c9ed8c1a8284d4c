"""Moved to :mod:`sodlib.eval.coco_eval`; this module re-exports it for one release."""
import warnings

from sodlib.eval.coco_eval import *  # noqa: F401,F403
from sodlib.eval.coco_eval import __all__  # noqa: F401

warnings.warn("sodlib.engine.coco_eval moved to sodlib.eval.coco_eval; import from there", DeprecationWarning, stacklevel=2)
