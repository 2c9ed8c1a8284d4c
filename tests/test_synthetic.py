"""The embedded synthetic dataset: determinism, COCO validity, masks vs pixels vs areas, size mix, atomicity."""
from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from sodlib.augment.masks import count_connected_pieces
from sodlib.data import synthetic
from sodlib.data.sizes import count_by_size_bin
from sodlib.data.synthetic import (
    CATEGORIES,
    EMBEDDED_SPLITS,
    SIZE_BIN_PROBABILITIES,
    embedded_dataset,
    generate_annotation_only_coco,
    generate_synthetic_coco,
    uncompressed_rle,
)
from tests.conftest import file_digests, interrupt_command

IMAGE_SIZE = 256


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> Path:
    """20 images of 256 px, seed 3, drawn by two workers."""
    root = tmp_path_factory.mktemp("synthetic")
    return generate_synthetic_coco(root, 20, seed=3, image_size=IMAGE_SIZE, workers=2, progress=False)


@pytest.fixture(scope="module")
def small_coco(small_dataset) -> COCO:
    return COCO(str(small_dataset))


def test_layout_and_fields(small_dataset):
    root = small_dataset.parents[1]
    assert small_dataset == root / "annotations" / "instances_train.json"
    document = json.loads(small_dataset.read_text())
    assert set(document) == {"info", "licenses", "images", "annotations", "categories"}
    assert document["categories"] == CATEGORIES
    assert [c["id"] for c in CATEGORIES] == list(range(1, len(CATEGORIES) + 1))
    assert "CC BY 4.0" in document["licenses"][0]["name"]
    assert [image["id"] for image in document["images"]] == list(range(1, 21))
    for image in document["images"]:
        assert image["file_name"] == f"{image['id']:012d}.jpg"
        assert (image["width"], image["height"]) == (IMAGE_SIZE, IMAGE_SIZE)
        assert (root / "train" / image["file_name"]).is_file()
    assert sorted(p.name for p in root.iterdir()) == ["annotations", "train"]  # no temporary folder left
    ids = [a["id"] for a in document["annotations"]]
    assert ids == list(range(1, len(ids) + 1))
    for annotation in document["annotations"]:
        assert set(annotation) == {"id", "image_id", "category_id", "segmentation", "area", "bbox", "iscrowd"}
        if annotation["iscrowd"] == 0:
            assert isinstance(annotation["segmentation"], list) and len(annotation["segmentation"]) == 1
            polygon = annotation["segmentation"][0]
            assert len(polygon) % 2 == 0 and len(polygon) >= 6
            xs, ys = np.array(polygon[0::2]), np.array(polygon[1::2])
            assert xs.min() >= 0 and ys.min() >= 0 and xs.max() <= IMAGE_SIZE and ys.max() <= IMAGE_SIZE


def test_area_bbox_and_no_overlap(small_coco):
    for image_id, image in small_coco.imgs.items():
        union = np.zeros((image["height"], image["width"]), dtype=np.int32)
        for annotation in small_coco.imgToAnns[image_id]:
            rle = small_coco.annToRLE(annotation)
            assert annotation["area"] == int(mask_utils.area(rle)) > 0
            mask = mask_utils.decode(rle)
            ys, xs = np.nonzero(mask)
            expected_box = [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert annotation["bbox"] == [float(v) for v in expected_box]
            union += mask
        assert union.max() <= 1, f"image {image_id}: two masks overlap"


def test_painted_pixels_follow_the_masks(small_coco, small_dataset):
    """Each object is painted with its own colours over a different background: inside and just outside differ."""
    folder = small_dataset.parents[1] / "train"
    differences = []
    for image_id, image in small_coco.imgs.items():
        pixels = np.asarray(Image.open(folder / image["file_name"]).convert("RGB"), dtype=np.float64)
        for annotation in small_coco.imgToAnns[image_id]:
            if annotation["iscrowd"] or annotation["area"] < 400:
                continue
            mask = small_coco.annToMask(annotation).astype(bool)
            x, y, w, h = (int(v) for v in annotation["bbox"])
            ring = np.zeros_like(mask)
            ring[max(y - 3, 0):y + h + 3, max(x - 3, 0):x + w + 3] = True
            ring &= ~mask
            inside, outside = pixels[mask].mean(axis=0), pixels[ring].mean(axis=0)
            differences.append(np.abs(inside - outside).max())
    assert len(differences) >= 10
    assert np.median(differences) > 15


def test_same_seed_same_bytes_whatever_the_workers(tmp_path, small_dataset):
    again = generate_synthetic_coco(tmp_path / "again", 20, seed=3, image_size=IMAGE_SIZE, workers=1, progress=False)
    assert again.read_bytes() == small_dataset.read_bytes()
    assert file_digests(tmp_path / "again") == file_digests(small_dataset.parents[1])


def test_different_seed_different_data(tmp_path, small_dataset):
    other = generate_synthetic_coco(tmp_path / "other", 20, seed=4, image_size=IMAGE_SIZE, workers=1, progress=False)
    assert other.read_bytes() != small_dataset.read_bytes()
    ours, theirs = file_digests(small_dataset.parents[1]), file_digests(tmp_path / "other")
    assert all(ours[name] != theirs[name] for name in ours if name.endswith(".jpg"))


def test_image_mode_size_mix_and_objects_per_image(tmp_path):
    """200 images of 512 px: the size mix lies within a few points of COCO's; about 7 objects per image."""
    json_path = generate_synthetic_coco(tmp_path, 200, seed=11, image_size=512, progress=False)
    document = json.loads(json_path.read_text())
    areas = np.array([a["area"] for a in document["annotations"]], dtype=np.float64)
    shares = {name: count / len(areas) for name, count in count_by_size_bin(areas).items()}
    for name, share in shares.items():
        assert abs(share - SIZE_BIN_PROBABILITIES[name]) < 0.04, (name, share)
    assert 6.0 < len(areas) / 200 < 8.5
    sides = np.sqrt(areas)
    assert sides.min() < 6 and sides.max() > 150


def test_crowd_annotations_are_valid_uncompressed_rle(tmp_path):
    json_path = generate_synthetic_coco(tmp_path, 60, seed=5, image_size=IMAGE_SIZE, progress=False)
    coco = COCO(str(json_path))
    crowds = [a for a in coco.anns.values() if a["iscrowd"] == 1]
    assert crowds, "60 images should hold a few crowd annotations"
    assert len(crowds) / len(coco.anns) < 0.05
    for crowd in crowds:
        rle = crowd["segmentation"]
        assert set(rle) == {"counts", "size"} and isinstance(rle["counts"], list)
        assert rle["size"] == [IMAGE_SIZE, IMAGE_SIZE] and sum(rle["counts"]) == IMAGE_SIZE * IMAGE_SIZE
        mask = coco.annToMask(crowd)
        assert crowd["area"] == int(mask.sum()) > 0
        # 4-connected pieces, counted by the function the copy-paste uses (tested against a flood fill there)
        assert count_connected_pieces(mask, connectivity=4) >= 5, "a crowd is a cluster of many tiny instances"


def test_uncompressed_rle_round_trip():
    rng = np.random.default_rng(0)
    for mask in [rng.random((7, 5)) < 0.4, np.ones((3, 4), bool), np.zeros((4, 3), bool)]:
        rle = uncompressed_rle(mask)
        decoded = mask_utils.decode(mask_utils.frPyObjects(rle, *mask.shape))
        np.testing.assert_array_equal(decoded, mask)


def test_annotation_only_counts_and_validity(tmp_path):
    json_path = generate_annotation_only_coco(tmp_path / "coco_scale.json", num_images=1000, num_objects=7000,
                                              seed=2, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["coco_scale.json"]
    coco = COCO(str(json_path))
    assert len(coco.imgs) == 1000 and len(coco.anns) == 7000
    assert sorted(coco.anns) == list(range(1, 7001))
    widths = [image["width"] for image in coco.imgs.values()]
    assert max(widths) == 640 and sum(w == 640 for w in widths) / len(widths) > 0.7
    per_image = np.array([len(coco.imgToAnns[i]) for i in coco.imgs])
    assert per_image.max() >= 25 and np.median(per_image) < per_image.mean()
    areas = np.array([a["area"] for a in coco.anns.values()], dtype=np.float64)
    shares = {name: count / len(areas) for name, count in count_by_size_bin(areas).items()}
    for name, share in shares.items():
        assert abs(share - SIZE_BIN_PROBABILITIES[name]) < 0.03, (name, share)
    crowd = [a for a in coco.anns.values() if a["iscrowd"]]
    assert 0.003 < len(crowd) / 7000 < 0.02
    for annotation in list(coco.anns.values())[:1500] + crowd:
        rle = coco.annToRLE(annotation)
        assert annotation["area"] == int(mask_utils.area(rle)) > 0
        assert annotation["bbox"] == [float(v) for v in mask_utils.toBbox(rle)]


def test_annotation_only_is_deterministic(tmp_path):
    first = generate_annotation_only_coco(tmp_path / "a.json", 50, 300, seed=1, progress=False)
    second = generate_annotation_only_coco(tmp_path / "b.json", 50, 300, seed=1, progress=False)
    assert first.read_bytes() == second.read_bytes()


def test_failure_midway_leaves_nothing(tmp_path, monkeypatch):
    real_render = synthetic.render_image

    def render_then_fail(seed, image_index, image_size):
        if image_index == 3:
            raise RuntimeError("disk full")
        return real_render(seed, image_index, image_size)

    monkeypatch.setattr(synthetic, "render_image", render_then_fail)
    with pytest.raises(RuntimeError, match="disk full"):
        generate_synthetic_coco(tmp_path, 6, seed=0, image_size=64, workers=1, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_existing_split_is_refused_unless_overwrite(tmp_path):
    generate_synthetic_coco(tmp_path, 2, seed=0, image_size=64, workers=1, progress=False)
    with pytest.raises(ValueError, match="overwrite=True"):
        generate_synthetic_coco(tmp_path, 2, seed=0, image_size=64, workers=1, progress=False)
    json_path = generate_synthetic_coco(tmp_path, 3, seed=1, image_size=64, workers=1, progress=False, overwrite=True)
    assert len(json.loads(json_path.read_text())["images"]) == 3
    assert len(list((tmp_path / "train").iterdir())) == 3
    generate_synthetic_coco(tmp_path, 2, seed=0, split="val", image_size=64, workers=1, progress=False)
    assert (tmp_path / "annotations" / "instances_val.json").is_file()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"num_images": 0}, "num_images"),
        ({"num_images": 2.5}, "num_images"),
        ({"image_size": 63}, "image_size"),
        ({"workers": 0}, "workers"),
        ({"split": "../escape"}, "split"),
        ({"split": ""}, "split"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(tmp_path, arguments, message):
    call = {"num_images": 2, "seed": 0, "image_size": 64, "workers": 1, "progress": False, **arguments}
    with pytest.raises(ValueError, match=message):
        generate_synthetic_coco(tmp_path / "out", **call)
    assert not (tmp_path / "out").exists()


def test_annotation_only_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="num_images"):
        generate_annotation_only_coco(tmp_path / "x.json", num_images=0, num_objects=5, progress=False)
    with pytest.raises(ValueError, match="num_objects"):
        generate_annotation_only_coco(tmp_path / "x.json", num_images=5, num_objects=-1, progress=False)


def test_embedded_dataset_generates_once_and_regenerates_on_a_new_version(tmp_path, monkeypatch):
    monkeypatch.setitem(EMBEDDED_SPLITS, "val", {"num_images": 3, "seed": 1})
    monkeypatch.setattr(synthetic, "EMBEDDED_IMAGE_SIZE", 64)
    json_path, images = embedded_dataset("val", root=tmp_path)
    assert json_path == tmp_path / "annotations" / "instances_val.json" and images == tmp_path / "val"
    assert len(list(images.glob("*.jpg"))) == 3
    stamp = json.loads((tmp_path / "stamp_val.json").read_text())
    assert stamp["generator_version"] == synthetic.GENERATOR_VERSION and stamp["num_images"] == 3

    modified = json_path.stat().st_mtime_ns
    assert embedded_dataset("val", root=tmp_path) == (json_path, images)
    assert json_path.stat().st_mtime_ns == modified, "a second call reuses the dataset"

    monkeypatch.setattr(synthetic, "GENERATOR_VERSION", synthetic.GENERATOR_VERSION + 1)
    embedded_dataset("val", root=tmp_path)
    assert json.loads((tmp_path / "stamp_val.json").read_text())["generator_version"] == synthetic.GENERATOR_VERSION

    with pytest.raises(ValueError, match="split"):
        embedded_dataset("test", root=tmp_path)


@pytest.mark.slow
def test_a_stopped_synth_removes_its_work_folder(tmp_path):
    def busy() -> bool:  # mid-run: the work folder holds images already
        return any(len(list((work / "train").glob("*.jpg"))) >= 5 for work in tmp_path.glob("out/.synth-train-*"))

    code, err = interrupt_command(["data", "synth", "--out", str(tmp_path / "out"), "--images", "5000",
                                   "--image-size", "64", "--workers", "1"], busy)
    assert code == -signal.SIGTERM, err[-2000:]
    assert list((tmp_path / "out").iterdir()) == []
