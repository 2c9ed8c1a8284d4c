"""Peak memory of one piece of work on the CPU, where torch keeps no count of its own.

Linux's ``/proc/self/status`` gives the resident size now (``VmRSS``) and its peak (``VmHWM``); writing ``5`` to
``/proc/self/clear_refs`` resets the peak to the current size. :func:`peak_resident_growth_mb` resets it, runs the
work, and returns the peak minus the size before: what the work added at its worst (activations, buffers), without
the interpreter, the libraries and the weights. Run it in a fresh process: a second run reuses pages the
allocator kept and shows almost nothing.
"""
from __future__ import annotations

from typing import Callable

__all__ = ["resident_mb", "peak_resident_growth_mb"]


def resident_mb(field: str = "VmRSS") -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (its peak) of this process, MB."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def peak_resident_growth_mb(work: Callable[[], object]) -> float:
    """MB by which ``work()`` raised this process's peak resident size above its size before (module docstring)."""
    with open("/proc/self/clear_refs", "w") as handle:  # "5" resets the peak resident size to the current one
        handle.write("5")
    before = resident_mb("VmRSS")
    work()
    return resident_mb("VmHWM") - before
