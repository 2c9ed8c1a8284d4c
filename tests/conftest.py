"""Shared fixtures: a tiny hand-made COCO dataset on disk, and coco-mini when this machine has it."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sodlib.data.paths import COCO_MINI_ANNOTATIONS, COCO_MINI_IMAGES, coco_mini_dir


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
