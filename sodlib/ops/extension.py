"""Loading the compiled extension ``sodlib._C`` and deciding when to fall back to the references.

Importing ``sodlib._C`` registers the ops ``torch.ops.sodlib.prroi_pool_forward``, ``..._backward_input``
and ``..._backward_rois`` with kernels for CPU and, when it was built with ``nvcc``, CUDA, and the forward's
autograd formula (all compiled: ``extensions/prroi/csrc``); importing :mod:`sodlib.ops.registrations` next
adds their fake (meta) kernels, which are written in Python.

Without the extension (or without a kernel for a tensor's device) the pooling ops run the pure-PyTorch
reference and warn once. ``SODLIB_REQUIRE_EXT=1`` (set by the test command) turns both into errors.
"""
from __future__ import annotations

import logging
import os
import warnings

import torch

logger = logging.getLogger(__name__)

REQUIRE_ENV = "SODLIB_REQUIRE_EXT"
BUILD_HINT = "build it with `pip install --no-build-isolation -e .` in the repository (see the Makefile's install)"


def extension_required() -> bool:
    """Whether ``SODLIB_REQUIRE_EXT=1`` forbids falling back to the reference."""
    return os.environ.get(REQUIRE_ENV) == "1"


def _load() -> str | None:
    """Import ``sodlib._C``; return why it failed, or ``None`` when it loaded."""
    try:
        import sodlib._C  # noqa: F401  (loading the library registers the ops)
    except (ImportError, OSError) as error:
        if extension_required():
            raise ImportError(f"{REQUIRE_ENV}=1 but the compiled extension sodlib._C failed to load ({error}); "
                              f"{BUILD_HINT}") from error
        logger.info("sodlib._C not loaded: %s", error)
        return str(error)
    import sodlib.ops.registrations  # noqa: F401  (the fake kernels of the ops just loaded)

    return None


LOAD_ERROR = _load()
EXTENSION_LOADED = LOAD_ERROR is None
_warned = False

# Device types with a compiled kernel (meta: the fake kernel, shapes only), looked up once; a plain set keeps
# the check traceable by torch.compile.
COMPILED_DEVICE_TYPES = frozenset(
    device_type
    for device_type, key in (("cpu", "CPU"), ("cuda", "CUDA"), ("meta", "Meta"))
    if EXTENSION_LOADED and torch._C._dispatch_has_kernel_for_dispatch_key("sodlib::prroi_pool_forward", key)
)


def has_compiled_kernel(device: torch.device) -> bool:
    """Whether ``sodlib._C`` has a kernel for tensors on ``device``."""
    return device.type in COMPILED_DEVICE_TYPES


def use_compiled_kernel(device: torch.device) -> bool:
    """True when the compiled kernel serves ``device``; otherwise warn once (or raise) and return False."""
    global _warned
    if has_compiled_kernel(device):
        return True
    reason = (f"sodlib._C is not loaded ({LOAD_ERROR})" if not EXTENSION_LOADED
              else f"sodlib._C has no kernel for {device.type} tensors")
    if extension_required():
        raise RuntimeError(f"{REQUIRE_ENV}=1 but {reason}; {BUILD_HINT}")
    if not _warned:
        warnings.warn(f"{reason}: precise RoI pooling falls back to the slower pure-PyTorch reference; {BUILD_HINT}",
                      RuntimeWarning, stacklevel=3)
        _warned = True
    return False
