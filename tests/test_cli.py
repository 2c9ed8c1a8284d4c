"""The command line: `python -m sodlib data check`, the error path, and data synth kept off the course's data."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from sodlib.cli import main
from sodlib.data.paths import COCO_MINI_ANNOTATIONS, COCO_MINI_IMAGES
from tests.conftest import assert_refused, file_digests, write_coco


def test_data_check_prints_counts(tiny_coco_files, capsys):
    path, image_dir = tiny_coco_files
    assert main(["data", "check", str(path), "--images", str(image_dir)]) == 0
    out = capsys.readouterr().out
    assert "valid; 2 images, 4 annotations (1 crowd), 2 categories" in out
    assert "by mask area, all: small 4 / medium 1 / large 0" in out
    assert "by mask area, non-crowd: small 3 / medium 1 / large 0" in out


def test_data_check_box_mode(tiny_coco_files, capsys):
    assert main(["data", "check", str(tiny_coco_files[0]), "--area", "box"]) == 0
    assert "by box area" in capsys.readouterr().out


def test_bad_file_exits_2_with_the_problem(tmp_path, tiny_coco):
    tiny_coco["annotations"][0]["bbox"][2] = -5
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(tiny_coco))
    result = subprocess.run([sys.executable, "-m", "sodlib", "data", "check", str(path)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "bbox width is -5" in result.stderr and result.stdout == ""


def test_data_synth_writes_a_loadable_dataset(tmp_path, capsys):
    out = tmp_path / "synth"
    assert main(["data", "synth", "--out", str(out), "--images", "3", "--seed", "5", "--image-size", "128",
                 "--workers", "1"]) == 0
    assert "wrote 3 images" in capsys.readouterr().out
    assert main(["data", "check", str(out / "annotations" / "instances_train.json"), "--images", str(out / "train")]) == 0
    assert "valid; 3 images" in capsys.readouterr().out


def test_data_synth_refuses_bad_arguments_with_exit_2(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path / "x"), "--images", "0"]) == 2
    assert "num_images" in capsys.readouterr().err
    assert not (tmp_path / "x" / "train").exists()


def test_data_synth_annotations(tmp_path, capsys):
    path = tmp_path / "big.json"
    assert main(["data", "synth-annotations", "--out", str(path), "--images", "50", "--objects", "400"]) == 0
    data = json.loads(path.read_text())
    assert len(data["images"]) == 50 and len(data["annotations"]) == 400


def digests(folder: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def annotation(index, **fields):
    """A bad-input case that changes fields of annotation ``index`` before the json is written."""
    return lambda data, path, image_dir: data["annotations"][index].update(fields)


def json_bytes(content: bytes):
    """A bad-input case whose json file holds ``content``."""
    return lambda data, path, image_dir: path.write_bytes(content) if path.exists() else None


def truncate_image(data, path, image_dir):
    if image_dir.is_dir():
        complete = (image_dir / "a.png").read_bytes()
        (image_dir / "a.png").write_bytes(complete[: len(complete) // 2])


def image(write):
    """A bad-input case that rewrites image a.png (64 x 48 in the json) once the images are written."""
    return lambda data, path, image_dir: write(image_dir / "a.png") if image_dir.is_dir() else None


BAD_INPUTS = {
    "negative-width box": (annotation(0, bbox=[2, 3, -4, 20]), "annotations[0] (id 1): bbox width is -4 (negative)"),
    "odd polygon": (annotation(0, segmentation=[[2, 3, 12, 3, 12]]), "segmentation[0] has 5 numbers"),
    "NaN in a polygon": (annotation(0, segmentation=[[2, 3, float("nan"), 3, 12, 23]]), "segmentation[0] holds nan"),
    "NaN area": (annotation(1, area=float("nan")), "annotations[1] (id 2): 'area' is nan"),
    "segmentation string": (annotation(0, segmentation="x"), "annotations[0] (id 1): 'segmentation' is 'x'"),
    "RLE size": (annotation(2, segmentation={"counts": [1600], "size": [40, 41]}), "RLE 'size' is [40, 41]"),
    "RLE sum": (annotation(2, segmentation={"counts": [0, 8, 1000], "size": [40, 40]}), "add up to 1008 pixels"),
    "RLE negative": (annotation(2, segmentation={"counts": [0, 8, -8, 1600], "size": [40, 40]}), "negative run"),
    "RLE string": (annotation(2, segmentation={"counts": "~~~", "size": [40, 40]}), "cannot be decoded"),
    "binary json": (json_bytes(b"\xff\xd8\xff\xe0 a jpeg"), "instances.json: not a COCO json: byte 0xff at offset 0"),
    "empty json": (json_bytes(b""), "instances.json: not a COCO json: the file is empty"),
    "empty image": (image(lambda file: file.write_bytes(b"")), "a.png is empty (0 bytes)"),
    "truncated image": (truncate_image, "a.png cannot be decoded ("),
    "image of another size": (image(lambda file: Image.new("RGB", (64, 47)).save(file)),
                              "a.png is 64x47 pixels (width x height) but the json says 64x48"),
}


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_data_check_refuses_bad_input_in_one_error_line(tmp_path, tiny_coco, capsys, name):
    change, expected = BAD_INPUTS[name]
    path, image_dir = tmp_path / "instances.json", tmp_path / "images"
    change(tiny_coco, path, image_dir)  # the cases that change the json's content
    write_coco(tmp_path, tiny_coco)
    change(tiny_coco, path, image_dir)  # the cases that change the written files
    before = digests(tmp_path)
    assert main(["data", "check", str(path), "--images", str(image_dir), "--workers", "2"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and expected in err and "Traceback" not in err
    assert [line for line in err.splitlines() if not line.startswith("  - ")] == [err.splitlines()[0]]
    assert digests(tmp_path) == before


def test_data_check_prints_warnings_as_lines_and_exits_0(tmp_path, tiny_coco, capsys):
    tiny_coco["annotations"][0]["area"] = 900.0
    tiny_coco["annotations"][3]["bbox"] = [5, 5, 38, 30]  # 3 px beyond the 40 x 40 image
    tiny_coco["annotations"][1]["bbox"][3] = 0  # zero height (COCO train2017 has two)
    path, image_dir = write_coco(tmp_path, tiny_coco)
    before = digests(tmp_path)
    assert main(["data", "check", str(path), "--images", str(image_dir)]) == 0
    out, err = capsys.readouterr()
    assert "valid; 2 images, 4 annotations" in out
    lines = err.splitlines()
    assert len(lines) == 3 and all(line.startswith(f"warning: {path}: 1 annotation(s) ") for line in lines)
    assert "bbox of zero width or height" in err
    assert "far from their mask's pixel area (" in err and "(ids 9), e.g. id 9: bbox [5, 5, 38, 30]" in err
    assert digests(tmp_path) == before


@pytest.fixture
def course_data(tmp_path, monkeypatch) -> Path:
    """Stand-ins for the course's datasets under tmp_path: the embedded splits (``datadir/embedded``, through
    ``$SODLIB_DATA_DIR``) and coco-mini (``mini``, through ``$SODLIB_COCO_MINI``)."""
    for root, files in ((tmp_path / "datadir" / "embedded", ["annotations/instances_train.json", "train/000000000001.jpg",
                                                           "annotations/instances_val.json", "val/000000000001.jpg"]),
                        (tmp_path / "mini", [str(COCO_MINI_ANNOTATIONS), f"{COCO_MINI_IMAGES}/1.jpg"])):
        for name in files:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(name)
    monkeypatch.setenv("SODLIB_DATA_DIR", str(tmp_path / "datadir"))
    monkeypatch.setenv("SODLIB_COCO_MINI", str(tmp_path / "mini"))
    return tmp_path


@pytest.mark.parametrize("argv, relation", [
    (["synth", "--out", "datadir/embedded", "--overwrite"], "is the course dataset"),
    (["synth", "--out", "datadir/embedded", "--split", "val", "--overwrite"], "is the course dataset"),
    (["synth", "--out", "datadir/embedded/train"], "lies inside the course dataset folder"),
    (["synth", "--out", "mini", "--split", str(COCO_MINI_IMAGES), "--overwrite"], "is the course dataset"),
    (["synth-annotations", "--out", "datadir/embedded/annotations/instances_train.json"], "is the course dataset"),
    (["synth-annotations", "--out", "datadir/embedded"], "holds the course dataset"),
])
def test_data_synth_never_writes_over_the_course_data(course_data, monkeypatch, capsys, argv, relation):
    monkeypatch.chdir(course_data)
    before = file_digests(course_data)
    assert_refused(capsys, ["data", *argv, "--images", "2", *(["--workers", "1"] if argv[0] == "synth" else [])], relation)
    assert file_digests(course_data) == before


def test_data_synth_writes_beside_the_course_data(course_data, capsys):
    before = file_digests(course_data / "datadir" / "embedded")
    assert main(["data", "synth", "--out", str(course_data / "datadir"), "--images", "1", "--image-size", "64",
                 "--workers", "1"]) == 0
    assert (course_data / "datadir" / "annotations" / "instances_train.json").is_file()
    assert file_digests(course_data / "datadir" / "embedded") == before
