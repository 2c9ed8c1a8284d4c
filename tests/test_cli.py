"""The command line: `python -m sodlib data check`, the error path, and data synth kept off the course's data."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sodlib.cli import main
from sodlib.data.paths import COCO_MINI_ANNOTATIONS, COCO_MINI_IMAGES
from tests.conftest import assert_refused, file_digests


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
