"""The command line: `python -m sodlib data check` and the error path."""
from __future__ import annotations

import json
import subprocess
import sys

from sodlib.cli import main


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
