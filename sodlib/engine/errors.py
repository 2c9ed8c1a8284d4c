"""Moved to :mod:`sodlib.eval.error_analysis`; this module re-exports it for one release."""
import warnings

from sodlib.eval.error_analysis import *  # noqa: F401,F403
from sodlib.eval.error_analysis import __all__  # noqa: F401

warnings.warn("sodlib.engine.errors moved to sodlib.eval.error_analysis; import from there", DeprecationWarning, stacklevel=2)
