"""Where sodlib finds and writes data.

- ``data_dir()``: generated data (the embedded dataset, benchmark files). ``$SODLIB_DATA_DIR`` if set;
  otherwise ``data/`` in the source checkout (git-ignored); otherwise ``~/.cache/sodlib``.
- ``coco_mini_dir()``: the 337-image real COCO subset used by tests and examples. ``$SODLIB_COCO_MINI`` if
  set; otherwise ``shared/data/coco-mini`` beside or inside the checkout, or found from the working
  directory upwards. ``None`` when absent: callers skip cleanly.
- ``coco_root()``: a full COCO 2017 folder a user points ``$COCO_ROOT`` at (``annotations/`` and
  ``train2017/``, ``val2017/``), or ``None``.
"""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
CHECKOUT_DIR = PACKAGE_DIR.parent
COCO_MINI_ANNOTATIONS = Path("annotations") / "instances_train2017_subset.json"
COCO_MINI_IMAGES = Path("train2017")


def _is_checkout(path: Path) -> bool:
    return (path / "pyproject.toml").is_file() and (path / "sodlib").is_dir()


def data_dir() -> Path:
    """The folder for generated data (created on demand by the writers, not here)."""
    if os.environ.get("SODLIB_DATA_DIR"):
        return Path(os.environ["SODLIB_DATA_DIR"]).expanduser()
    if _is_checkout(CHECKOUT_DIR):
        return CHECKOUT_DIR / "data"
    return Path.home() / ".cache" / "sodlib"


def _coco_mini_candidates() -> list[Path]:
    candidates = []
    if os.environ.get("SODLIB_COCO_MINI"):
        candidates.append(Path(os.environ["SODLIB_COCO_MINI"]).expanduser())
    for base in [CHECKOUT_DIR, *CHECKOUT_DIR.parents[:2], Path.cwd(), *Path.cwd().parents[:3]]:
        candidates += [base / "shared" / "data" / "coco-mini", base / "data" / "coco-mini"]
    return candidates


def coco_mini_dir() -> Path | None:
    """The coco-mini folder, or ``None`` when it is not on this machine."""
    for candidate in _coco_mini_candidates():
        if (candidate / COCO_MINI_ANNOTATIONS).is_file() and (candidate / COCO_MINI_IMAGES).is_dir():
            return candidate
    return None


def coco_root() -> Path | None:
    """``$COCO_ROOT`` when it points at an existing folder, else ``None``."""
    root = os.environ.get("COCO_ROOT")
    if root and Path(root).expanduser().is_dir():
        return Path(root).expanduser()
    return None
