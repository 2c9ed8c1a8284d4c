"""Size mixes of the synthetic generator: the COCO-like mix draws what the generator always drew, the tiny mix
(traffic-sign-like) draws nine objects in ten under 0.2 % of the image, the embedded tiny dataset, the size-mix
report, bad mixes, and the ``embedded_tiny:...`` data sources of run configurations."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math

import numpy as np
import pytest

from sodlib.cli import main
from sodlib.data import synthetic
from sodlib.data.sizes import TT100K_SIZE_MIX, size_mix_report
from sodlib.data.synthetic import (
    COCO_LIKE_MIX,
    EMBEDDED_SPLITS,
    EMBEDDED_TINY_SPLITS,
    SIZE_MIXES,
    TINY_MIX,
    SizeMix,
    embedded_tiny_dataset,
    embedded_tiny_paths,
    generate_synthetic_coco,
    render_image,
    render_image_twin,
)
from sodlib.engine.runs import data_paths, datasets_from_config
from tests.conftest import assert_refused, file_digests

# md5 of the pixels (before JPEG) and the annotations (json of the PlacedObject fields, sorted keys) of
# render_image(seed, index, size), computed with the generator as it was before size mixes existed
# (GENERATOR_VERSION 4); 128 px has no large bin.
BEFORE_MIXES = {
    (0, 0, 512): "5dfd1f52fa15ab595053b6c8800b5239",
    (0, 1, 512): "fe2dc474039f83a990fdf834f94f6b50",
    (0, 2, 512): "10f47ed28f24c43a3e5acb42a2768347",
    (0, 3, 512): "cc93b95d02d34c7d20e719d4e4a376b9",
    (0, 4, 512): "9fc25128c58818c4dec63ad3ba14b998",
    (1, 0, 512): "d346257718e24fc49735ad5efbb6bb2c",
    (3, 0, 256): "e0431a239359d63f9354880c4f540285",
    (3, 1, 256): "d0d724f8bd489eeb890a1ed126b524f3",
    (2, 0, 128): "ff7f93e59fa3cbe855e8532e20ba05f8",
    (2, 1, 128): "9303b37c22ccd65bea5defcb1e7ba6ce",
}
TWIN_BEFORE_MIXES = "94e7d39b16ab6acbe9579f0e22cd8680"  # render_image_twin(0, 2, 256, 2)
JSON_BEFORE_MIXES = "df091891ebc0d823506ad743c0122bc6"  # json of generate_synthetic_coco(_, 3, seed=3, image_size=256)

# the same digests of two tiny-mix images, computed when the mix was added: a change to them is a change to the
# embedded tiny dataset, which needs a GENERATOR_VERSION bump (so that cached copies are regenerated)
TINY_DIGESTS = {(10, 0, 640): "df88fd7a1f0bbc23aa40aca43da8fbd6", (11, 3, 640): "054f63a3164d6f9f7f75486df364b280"}

TINY_IMAGES = 40
TINY_SEED = EMBEDDED_TINY_SPLITS["train"]["seed"]


def render_digest(seed: int, index: int, size: int, **options) -> str:
    image, annotations = render_image(seed, index, size, **options)
    digest = hashlib.md5(np.asarray(image).tobytes())
    digest.update(json.dumps([dataclasses.asdict(a) for a in annotations], sort_keys=True).encode())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def tiny_json(tmp_path_factory):
    """The first 40 images of the embedded tiny train split (seed 10, 640 px, the tiny mix), by two workers."""
    root = tmp_path_factory.mktemp("tiny")
    return generate_synthetic_coco(root, TINY_IMAGES, seed=TINY_SEED, image_size=synthetic.EMBEDDED_TINY_IMAGE_SIZE,
                                   mix=TINY_MIX, workers=2, progress=False)


@pytest.fixture
def small_tiny_splits(tmp_path, monkeypatch):
    """The embedded tiny splits cut to 2 images each, under ``tmp_path/datadir`` (``$SODLIB_DATA_DIR``)."""
    for split in EMBEDDED_TINY_SPLITS:
        monkeypatch.setitem(EMBEDDED_TINY_SPLITS, split, {**EMBEDDED_TINY_SPLITS[split], "num_images": 2})
    monkeypatch.setenv("SODLIB_DATA_DIR", str(tmp_path / "datadir"))
    return tmp_path / "datadir" / "embedded_tiny"


# ----------------------------------------------------------------------------------------------------------
# The COCO-like mix is the generator as it was
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed, index, size", list(BEFORE_MIXES))
def test_the_coco_like_mix_draws_the_images_drawn_before_mixes(seed, index, size):
    assert render_digest(seed, index, size) == BEFORE_MIXES[seed, index, size]
    assert render_digest(seed, index, size, mix=COCO_LIKE_MIX) == BEFORE_MIXES[seed, index, size]


def test_the_coco_like_twin_and_json_are_those_drawn_before_mixes(tmp_path):
    assert hashlib.md5(render_image_twin(0, 2, 256, 2).tobytes()).hexdigest() == TWIN_BEFORE_MIXES
    json_path = generate_synthetic_coco(tmp_path, 3, seed=3, image_size=256, workers=1, progress=False)
    assert hashlib.md5(json_path.read_bytes()).hexdigest() == JSON_BEFORE_MIXES
    assert synthetic.GENERATOR_VERSION == 4


def test_the_coco_like_mix_is_the_module_constants():
    assert COCO_LIKE_MIX.probabilities == synthetic.SIZE_BIN_PROBABILITIES
    assert COCO_LIKE_MIX.draw_boost == {"large": synthetic.LARGE_DRAW_BOOST}
    assert (COCO_LIKE_MIX.mean_objects, COCO_LIKE_MIX.max_objects, COCO_LIKE_MIX.crowd_probability) == (
        synthetic.MEAN_OBJECTS_PER_IMAGE, synthetic.MAX_OBJECTS_PER_IMAGE, synthetic.CROWD_PROBABILITY)
    assert synthetic.side_ranges(512) == {"small": (4.0, 32.0), "medium": (32.0, 96.0), "large": (96.0, 256.0)}
    assert synthetic.side_ranges(128) == {"small": (4.0, 32.0), "medium": (32.0, 64.0)}
    assert SIZE_MIXES == {"coco_like": COCO_LIKE_MIX, "tiny": TINY_MIX, "large": synthetic.LARGE_MIX}


# ----------------------------------------------------------------------------------------------------------
# The tiny mix
# ----------------------------------------------------------------------------------------------------------

def test_the_tiny_mix_bins_are_shares_of_a_640_px_image():
    (lo, edge), (edge_again, hi) = TINY_MIX.bins["under_0.2%"], TINY_MIX.bins["0.2%-2%"]
    assert lo == 3.0 and edge == edge_again
    assert edge**2 == pytest.approx(0.002 * 640**2) and hi**2 == pytest.approx(0.02 * 640**2)
    assert TINY_MIX.probabilities == {"under_0.2%": 0.9, "0.2%-2%": 0.1}
    assert TINY_MIX.crowd_probability == 0 and TINY_MIX.mean_objects == 10 and TINY_MIX.max_objects == 60


def test_the_tiny_mix_measured_shares(tiny_json):
    """Each object draws its bin independently (0.9 / 0.1), so with n objects the measured share under 0.2 % lies
    within 4 binomial standard deviations of 0.9, plus 0.005 for the objects whose rasterised area crosses the
    bin edge (measured: a net 0.0002). The count per image is 1 + NegativeBinomial(shape 1.5, mean 9): standard
    deviation sqrt(9 + 81 / 1.5) = 7.9 per image, so the mean of 40 images lies within 4 * 7.9 / sqrt(40) of 10
    (no object finds no room in these sparse images)."""
    report = size_mix_report(tiny_json)
    n = report["instances"]
    assert report["images"] == TINY_IMAGES and report["crowd"] == 0
    assert abs(report["instances_per_image"] - 10) <= 4 * math.sqrt(9 + 81 / 1.5) / math.sqrt(TINY_IMAGES)
    shares = report["image_area_shares"]
    assert abs(shares["under_0.2%"] - 0.9) <= 4 * math.sqrt(0.9 * 0.1 / n) + 0.005, shares
    assert shares["over_2%"] == 0
    assert shares["under_0.2%"] + shares["0.2%-2%"] == pytest.approx(1)
    assert report["coco_shares"]["large"] == 0


def test_three_pixel_objects_rasterise_to_pixels(tiny_json):
    """The smallest side is 3 px: pycocotools rasterises such polygons to a few pixels at any angle and place, and
    every annotation keeps its pixels."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        shape = list(synthetic.SHAPE_TEMPLATES)[rng.integers(len(synthetic.SHAPE_TEMPLATES))]
        polygon = synthetic._shape_polygon(shape, 3.0, rng.uniform(0, 2 * np.pi), float(rng.uniform(0.75, 4 / 3)),
                                           rng.uniform(10, 11, 2))
        _, mask = synthetic._rasterise(polygon, 24, 24)
        assert mask.sum() >= 1
    areas = [a["area"] for a in json.loads(tiny_json.read_text())["annotations"]]
    assert min(areas) >= 1 and min(areas) < 16, "objects of 3-4 px are drawn and annotated"


@pytest.mark.parametrize("seed, index, size", list(TINY_DIGESTS))
def test_the_tiny_mix_draws_the_images_it_drew_when_added(seed, index, size):
    assert render_digest(seed, index, size, mix=TINY_MIX) == TINY_DIGESTS[seed, index, size]


def test_the_tiny_mix_same_seed_same_bytes(tmp_path):
    options = {"seed": TINY_SEED, "image_size": 640, "mix": TINY_MIX, "progress": False}
    first = generate_synthetic_coco(tmp_path / "a", 3, workers=1, **options)
    second = generate_synthetic_coco(tmp_path / "b", 3, workers=2, **options)
    assert first.read_bytes() == second.read_bytes()
    assert file_digests(tmp_path / "a") == file_digests(tmp_path / "b")
    assert "size mix tiny" in json.loads(first.read_text())["info"]["description"]


def test_the_tiny_twin_is_the_tiny_image_larger(small_tiny_splits):
    twin = synthetic.embedded_twin("val", 1, 2, dataset="embedded_tiny")
    assert twin.shape == (1280, 1280, 3)
    np.testing.assert_array_equal(twin, render_image_twin(EMBEDDED_TINY_SPLITS["val"]["seed"], 0, 640, 2, TINY_MIX))


# ----------------------------------------------------------------------------------------------------------
# The embedded tiny dataset
# ----------------------------------------------------------------------------------------------------------

def test_embedded_tiny_splits_have_their_own_seeds():
    assert EMBEDDED_TINY_SPLITS == {"train": {"num_images": 800, "seed": 10}, "val": {"num_images": 200, "seed": 11}}
    assert not {s["seed"] for s in EMBEDDED_TINY_SPLITS.values()} & {s["seed"] for s in EMBEDDED_SPLITS.values()}


def test_embedded_tiny_dataset_paths_stamp_and_reuse(small_tiny_splits):
    root = small_tiny_splits
    assert embedded_tiny_paths("val") == (root / "annotations" / "instances_val.json", root / "val")
    assert not root.exists(), "embedded_tiny_paths only says where"
    json_path, images = embedded_tiny_dataset("val")
    assert (json_path, images) == embedded_tiny_paths("val")
    assert sorted(p.name for p in images.iterdir()) == ["000000000001.jpg", "000000000002.jpg"]
    document = json.loads(json_path.read_text())
    assert {(i["width"], i["height"]) for i in document["images"]} == {(640, 640)}
    stamp = json.loads((root / "stamp_val.json").read_text())
    assert stamp == {"generator_version": synthetic.GENERATOR_VERSION, "split": "val", "image_size": 640,
                     "num_images": 2, "seed": 11, "size_mix": json.loads(json.dumps(TINY_MIX.describe()))}

    modified = json_path.stat().st_mtime_ns
    digests = file_digests(root / "val")
    assert embedded_tiny_dataset("val") == (json_path, images)
    assert json_path.stat().st_mtime_ns == modified, "a second call reuses the split"

    (root / "stamp_val.json").write_text(json.dumps({**stamp, "size_mix": {**stamp["size_mix"], "mean_objects": 3}}))
    embedded_tiny_dataset("val")
    assert json.loads((root / "stamp_val.json").read_text()) == stamp, "a stamp of another mix regenerates"
    assert file_digests(root / "val") == digests, "and the split comes out the same bytes"

    with pytest.raises(ValueError, match="split='test' is not a split of embedded_tiny"):
        embedded_tiny_dataset("test")


def test_the_coco_like_stamp_holds_no_mix():
    assert set(synthetic._stamp("train")) == {"generator_version", "split", "image_size", "num_images", "seed"}
    assert synthetic._stamp("train", "embedded_tiny")["size_mix"]["name"] == "tiny"


def test_data_embedded_tiny_command(small_tiny_splits, capsys):
    assert main(["data", "embedded", "--tiny"]) == 0
    out = capsys.readouterr().out
    assert f"train: {small_tiny_splits / 'annotations' / 'instances_train.json'}" in out and "under_0.2%" in out
    assert (small_tiny_splits / "val").is_dir()


def test_data_synth_keeps_off_the_tiny_set(small_tiny_splits, capsys):
    embedded_tiny_dataset("train")
    before = file_digests(small_tiny_splits)
    assert_refused(capsys, ["data", "synth", "--out", str(small_tiny_splits), "--images", "1", "--workers", "1",
                            "--size-mix", "tiny", "--overwrite"], "is the course dataset")
    assert file_digests(small_tiny_splits) == before


# ----------------------------------------------------------------------------------------------------------
# The size-mix report
# ----------------------------------------------------------------------------------------------------------

def test_size_mix_report_bins_by_image_share_and_by_coco_area(tmp_path):
    """One 1000 x 1000 image (a share 0.002 is 2000 px): edges go to the upper share bin, and 1024 / 9216 to the
    lower COCO bin."""
    areas = [100, 1024, 1025, 1999, 2000, 9216, 9217, 19999, 20000]
    document = {"images": [{"id": 1, "width": 1000, "height": 1000}, {"id": 2, "width": 10, "height": 10}],
                "annotations": [{"id": k + 1, "image_id": 1, "area": a, "bbox": [0, 0, 1, 1], "iscrowd": 0}
                                for k, a in enumerate(areas)]
                + [{"id": 99, "image_id": 1, "area": 5, "bbox": [0, 0, 1, 1], "iscrowd": 1}],
                "categories": []}
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(document))
    report = size_mix_report(path)
    assert (report["images"], report["instances"], report["crowd"]) == (2, 9, 1)
    assert report["instances_per_image"] == 4.5
    assert report["image_area_shares"] == {"under_0.2%": 4 / 9, "0.2%-2%": 4 / 9, "over_2%": 1 / 9}
    assert report["coco_shares"] == {"small": 2 / 9, "medium": 4 / 9, "large": 3 / 9}


def test_tt100k_size_mix_says_what_the_paper_says():
    assert TT100K_SIZE_MIX["image_area_shares"] == {"under_0.2%": 0.92}
    assert (TT100K_SIZE_MIX["image_size"], TT100K_SIZE_MIX["resized_to"]) == (2048, 1400)
    assert TT100K_SIZE_MIX["source"] == "Deng et al. 2021, EFPN, §IV-A"


# ----------------------------------------------------------------------------------------------------------
# Bad mixes
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("changes, message", [
    ({"probabilities": {"under_0.2%": 0.8, "0.2%-2%": 0.1}}, r"probabilities sum to 0\.9, not 1"),
    ({"probabilities": {"under_0.2%": 1.0}}, "probabilities must name exactly the bins"),
    ({"probabilities": {"under_0.2%": 1.2, "0.2%-2%": -0.2}}, r"probabilities\['under_0\.2%'\]"),
    ({"bins": {"under_0.2%": (28.0, 3.0), "0.2%-2%": (28.0, 90.0)}}, r"bins\['under_0\.2%'\].*lo must be < hi"),
    ({"bins": {"under_0.2%": (5.0, 5.0), "0.2%-2%": (28.0, 90.0)}}, r"bins\['under_0\.2%'\].*lo must be < hi"),
    ({"bins": {"under_0.2%": (0.5, 28.0), "0.2%-2%": (28.0, 90.0)}}, r"bins\['under_0\.2%'\].*must be >= 1 px"),
    ({"bins": {}}, "bins"),
    ({"mean_objects": 0.5}, "mean_objects"),
    ({"max_objects": 0}, "max_objects"),
    ({"crowd_probability": 1.5}, "crowd_probability"),
    ({"draw_boost": {"large": 1.1}}, "draw_boost names 'large'"),
    ({"largest_side_fraction": 0.8}, "largest_side_fraction"),
])
def test_a_bad_mix_is_refused_naming_the_field(changes, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(TINY_MIX, **changes)


def test_generate_refuses_a_mix_that_is_not_a_size_mix(tmp_path):
    with pytest.raises(ValueError, match="mix='tiny' must be a SizeMix"):
        generate_synthetic_coco(tmp_path / "out", 1, seed=0, image_size=64, workers=1, progress=False, mix="tiny")
    assert not (tmp_path / "out").exists()
    assert isinstance(SIZE_MIXES["tiny"], SizeMix)


# ----------------------------------------------------------------------------------------------------------
# Run configurations: embedded_tiny:... data sources
# ----------------------------------------------------------------------------------------------------------

def test_run_configs_read_embedded_tiny(small_tiny_splits):
    config = {"data": {"train": "embedded_tiny:train", "val": "embedded_tiny:val"}}
    assert data_paths(config) == [*embedded_tiny_paths("train"), *embedded_tiny_paths("val")]
    assert not small_tiny_splits.exists(), "data_paths generates nothing"
    train_set, val_set = datasets_from_config(config)
    assert len(train_set) == len(val_set) == 2
    assert (small_tiny_splits / "stamp_train.json").is_file() and (small_tiny_splits / "stamp_val.json").is_file()


@pytest.mark.parametrize("source", ["embeded_tiny:train", "embedded_tiny:test", "embedded-tiny:train", "tiny"])
def test_run_configs_refuse_a_misspelt_source(source):
    with pytest.raises(ValueError, match=rf"\[data\] train='{source}': use one of 'embedded:train', 'embedded:val', "
                                         r"'embedded_tiny:train', 'embedded_tiny:val', 'embedded_large:train', "
                                         r"'embedded_large:val', 'none'"):
        data_paths({"data": {"train": source}})
