"""Shared fixtures: a tiny hand-made COCO dataset on disk, coco-mini when this machine has it, and the checks of
a refused command (exit code 2, one error line, every input byte-identical)."""
from __future__ import annotations

import copy
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sodlib.data.paths import COCO_MINI_ANNOTATIONS, COCO_MINI_IMAGES, coco_mini_dir

ROOT = Path(__file__).resolve().parents[1]


def tiny_coco_dict() -> dict:
    """Two images, two categories, four annotations with known areas (one crowd, one exactly 32^2)."""
    square = lambda x, y, s: [[x, y, x + s, y, x + s, y + s, x, y + s]]  # noqa: E731
    return {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 64, "height": 48},
            {"id": 7, "file_name": "b.png", "width": 40, "height": 40},
        ],
        "categories": [{"id": 3, "name": "cat"}, {"id": 10, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 10, "bbox": [2, 3, 10, 20], "area": 200.0,
             "iscrowd": 0, "segmentation": [[2, 3, 12, 3, 12, 23, 2, 23]]},
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [20, 4, 32, 32], "area": 1024.0,
             "iscrowd": 0, "segmentation": square(20, 4, 32)},
            {"id": 5, "image_id": 7, "category_id": 3, "bbox": [0, 0, 4, 2], "area": 8.0, "iscrowd": 1,
             "segmentation": {"counts": [0, 2, 38, 2, 38, 2, 38, 2, 1478], "size": [40, 40]}},
            {"id": 9, "image_id": 7, "category_id": 10, "bbox": [5, 5, 20, 30], "area": 600.0,
             "iscrowd": 0, "segmentation": [[5, 5, 25, 5, 25, 35, 5, 35]]},
        ],
    }


@pytest.fixture
def tiny_coco() -> dict:
    return copy.deepcopy(tiny_coco_dict())


def write_coco(folder: Path, data: dict, with_images: bool = True) -> tuple[Path, Path]:
    """Write ``data`` as ``folder/instances.json`` and random images under ``folder/images``."""
    image_dir = folder / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    if with_images:
        rng = np.random.default_rng(0)
        for image in data["images"]:
            pixels = rng.integers(0, 256, size=(image["height"], image["width"], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(image_dir / image["file_name"])
    path = folder / "instances.json"
    path.write_text(json.dumps(data))
    return path, image_dir


@pytest.fixture
def tiny_coco_files(tmp_path, tiny_coco) -> tuple[Path, Path]:
    return write_coco(tmp_path, tiny_coco)


@pytest.fixture(scope="session")
def coco_mini() -> tuple[Path, Path]:
    """(annotations json, image folder) of coco-mini; skips the test when this machine lacks it."""
    root = coco_mini_dir()
    if root is None:
        pytest.skip("coco-mini is not on this machine (set SODLIB_COCO_MINI to its folder)")
    return root / COCO_MINI_ANNOTATIONS, root / COCO_MINI_IMAGES


def file_digests(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``folder`` (a removed, added or changed file shows)."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def assert_refused(capsys, argv: list[str], *phrases: str) -> str:
    """Run ``python -m sodlib argv`` in-process and check that it is refused: exit code 2, stdout empty, one
    ``error:`` line on stderr (the message may go on over indented lines), no traceback, every phrase in it.
    Returns the error text."""
    from sodlib.cli import main

    capsys.readouterr()
    assert main(argv) == 2
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and captured.err.startswith("error:"), captured.err
    assert "Traceback" not in captured.err and captured.out == "", captured
    for phrase in phrases:
        assert phrase in captured.err, (phrase, captured.err)
    return captured.err


def interrupt_command(argv: list[str], ready: Callable[[], bool], sig: int = signal.SIGTERM,
                      timeout: float = 120.0) -> tuple[int, str]:
    """Start ``python -m sodlib argv`` in a real subprocess (this checkout first on its path), poll ``ready()``
    until it is true, send ``sig`` and return ``(exit code, stderr)`` once the process has ended."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    # a shell's background job (`cmd &`) starts with SIGINT ignored, and Python keeps an ignored SIGINT ignored:
    # give the child the default disposition, so that it sees Ctrl-C as it would in a terminal
    process = subprocess.Popen([sys.executable, "-m", "sodlib", *argv], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, env=env,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert process.poll() is None, f"the command ended before it was interrupted:\n{process.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, f"not ready after {timeout:.0f} s"
            time.sleep(0.05)
        process.send_signal(sig)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, err
