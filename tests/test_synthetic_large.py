"""The embedded large-image variant: 1600 px images with aerial-like densities of 4-32 px objects, its size mix
measured, its stamp and its command."""
from __future__ import annotations

import math

import numpy as np
import pytest

from sodlib.cli import main
from sodlib.data import synthetic
from sodlib.data.sizes import size_mix_report
from sodlib.data.synthetic import (EMBEDDED_LARGE_SPLITS, LARGE_MIX, embedded_large_dataset, embedded_large_paths,
                                   generate_synthetic_coco)
from sodlib.stats import object_table

LARGE_IMAGES = 6


@pytest.fixture(scope="module")
def large_json(tmp_path_factory):
    """The first images of the embedded large train split (its seed, 1600 px, the large mix)."""
    root = tmp_path_factory.mktemp("large")
    return generate_synthetic_coco(root, LARGE_IMAGES, seed=EMBEDDED_LARGE_SPLITS["train"]["seed"],
                                   image_size=synthetic.EMBEDDED_LARGE_IMAGE_SIZE, mix=LARGE_MIX, workers=2,
                                   progress=False)


def test_the_large_mix_is_aerial_like():
    assert LARGE_MIX.bins == {"4-16 px": (4.0, 16.0), "16-32 px": (16.0, 32.0)}
    assert LARGE_MIX.probabilities == {"4-16 px": 0.6, "16-32 px": 0.4}
    assert LARGE_MIX.crowd_probability == 0 and LARGE_MIX.mean_objects == 40
    assert synthetic.EMBEDDED_LARGE_IMAGE_SIZE == 1600
    assert EMBEDDED_LARGE_SPLITS["train"]["seed"] != EMBEDDED_LARGE_SPLITS["val"]["seed"]


def test_the_large_mix_measured(large_json):
    """Objects are small by COCO's bins; the tiny bin (area < 16^2) holds about the 0.6 drawn under 16 px (a mask
    is smaller than its drawn side, a few of the 16-32 px shapes fall under 256 px^2 too)."""
    report = size_mix_report(large_json)
    table = object_table(str(large_json))
    n = report["instances"]
    assert report["images"] == LARGE_IMAGES and report["crowd"] == 0
    assert report["coco_shares"]["small"] > 0.99
    tiny = float(np.mean(table.areas < 256))
    assert 0.6 - 4 * math.sqrt(0.24 / n) <= tiny <= 0.75, tiny
    assert 20 <= report["instances_per_image"] <= 60
    assert set(table.image_widths.tolist()) == {1600} and set(table.image_heights.tolist()) == {1600}


def test_the_large_mix_same_seed_same_bytes(tmp_path):
    first = generate_synthetic_coco(tmp_path / "a", 1, seed=20, image_size=1600, mix=LARGE_MIX, workers=1, progress=False)
    second = generate_synthetic_coco(tmp_path / "b", 1, seed=20, image_size=1600, mix=LARGE_MIX, workers=1, progress=False)
    assert first.read_bytes() == second.read_bytes()
    image = next((tmp_path / "a" / "train").iterdir())
    assert image.read_bytes() == (tmp_path / "b" / "train" / image.name).read_bytes()


def test_data_embedded_large_command(tmp_path, monkeypatch, capsys):
    for split in EMBEDDED_LARGE_SPLITS:
        monkeypatch.setitem(EMBEDDED_LARGE_SPLITS, split, {**EMBEDDED_LARGE_SPLITS[split], "num_images": 1})
    monkeypatch.setenv("SODLIB_DATA_DIR", str(tmp_path / "datadir"))
    root = tmp_path / "datadir" / "embedded_large"
    assert embedded_large_paths("val") == (root / "annotations" / "instances_val.json", root / "val")
    assert main(["data", "embedded", "--large"]) == 0
    out = capsys.readouterr().out
    assert f"train: {root / 'annotations' / 'instances_train.json'}" in out
    assert embedded_large_dataset("val") == embedded_large_paths("val")
    assert synthetic._stamp("train", "embedded_large")["size_mix"]["name"] == "large"
