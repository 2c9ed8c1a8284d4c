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
