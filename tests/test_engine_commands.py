"""python -m sodlib train / evaluate / experiment, run folders, and the shipped configs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from sodlib.cli import main
from sodlib.data import generate_synthetic_coco
from sodlib.data.paths import CHECKOUT_DIR
from sodlib.engine.runs import apply_overrides, datasets_from_config, load_run_config
from tests.conftest import assert_refused, file_digests
from tests.engine_fixtures import one_thread, tiny_run_config  # noqa: F401  (one_thread is used through pytestmark)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("commands")
    annotations = generate_synthetic_coco(root / "data", 6, seed=4, image_size=96, workers=1, progress=False)
    path = root / "tiny.toml"
    path.write_text(tiny_run_config(annotations, root / "data" / "train"))
    return path


def test_train_then_evaluate_from_the_shell(config_file, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", "--config", str(config_file), "--run-dir", str(run_dir), "--set", "train.lr=0.005"]) == 0
    out = capsys.readouterr().out
    assert "trained 2 steps" in out and "AP50" in out and "AP_tiny" in out
    for name in ("run_config.json", "config.json", "summary.json", "metrics.json", "history.json", "detections_val.json",
                 "checkpoints/last.pt", "figures/loss_curves.png", "figures/pr_curves_iou50.png", "figures/pr_curves_iou75.png",
                 ):
        assert (run_dir / name).is_file(), name
    assert len(list((run_dir / "figures").glob("errors_image*.png"))) == 2
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["config"]["train"]["lr"] == 0.005 and summary["seed"] == 1 and summary["hardware"]["cpu_count"] >= 1
    assert summary["command"].startswith("python -m sodlib")

    assert main(["evaluate", "--checkpoint", str(run_dir / "checkpoints" / "last.pt"), "--annotations",
                 json.loads((run_dir / "run_config.json").read_text())["data"]["val_annotations"], "--images",
                 json.loads((run_dir / "run_config.json").read_text())["data"]["val_images"], "--size-bin", "tiny=0,64",
                 "--out", str(tmp_path / "eval"), "--quiet"]) == 0
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    trained = json.loads((run_dir / "metrics.json").read_text())
    assert {k: evaluated[k] for k in ("AP", "AP50", "APs", "AP_tiny")} == {k: trained[k] for k in ("AP", "AP50", "APs", "AP_tiny")}
    assert "AP_tiny" in capsys.readouterr().out

    # a second train into the same folder needs --resume or --overwrite
    assert main(["train", "--config", str(config_file), "--run-dir", str(run_dir)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--config", str(config_file), "--run-dir", str(run_dir), "--resume", "--set", "train.lr=0.005"]) == 0


def test_bad_command_inputs_are_refused(config_file, tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["train", "--config", str(config_file), "--set", "lr=0.1"]) == 2
    assert "SECTION.KEY=VALUE" in capsys.readouterr().err
    assert main(["train", "--config", str(config_file), "--set", "train.optimizer=adam", "--run-dir", str(tmp_path / "r")]) == 2
    assert "optimizer='adam'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # refused before any work
    assert main(["evaluate", "--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert main(["evaluate", "--checkpoint", str(tmp_path / "none.pt"), "--size-bin", "tiny"]) == 2
    assert "NAME=LO,HI" in capsys.readouterr().err
    assert main(["experiment", "no_such_experiment"]) == 2
    assert "fast_baseline" in capsys.readouterr().err


def test_experiment_writes_its_results_json(config_file, tmp_path, monkeypatch, capsys):
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "fast.toml").write_text(config_file.read_text())
    monkeypatch.setenv("SODLIB_CONFIGS", str(configs))
    from sodlib.engine.experiments import run_experiment

    record = run_experiment("fast_baseline", quick=True, overrides=["train.seed=2"], results_dir=tmp_path / "results",
                            runs_root=tmp_path / "runs", command="test")
    written = json.loads((tmp_path / "results" / "fast_baseline_quick.json").read_text())
    assert written["quick"] is True and written["seeds"] == {"fast": 2} and written["command"] == "test"
    assert written["overrides"] == ["train.seed=2"]
    assert written["runs"]["fast"]["iterations"] == 4 and "AP50" in written["runs"]["fast"]["metrics"]
    assert written["duration_s"] > 0 and record["path"].endswith("fast_baseline_quick.json")
    from sodlib.engine.experiments import load_experiment_results

    assert load_experiment_results("fast_baseline_quick", tmp_path / "results") == written
    with pytest.raises(FileNotFoundError, match="python -m sodlib experiment full_baseline"):
        load_experiment_results("full_baseline", tmp_path / "results")
    assert main(["experiment", "list"]) == 0
    assert "full_baseline" in capsys.readouterr().out
    assert main(["models"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert {"faster_rcnn", "rfcn", "efpn"} <= set(listed) and listed == sorted(listed)


@pytest.mark.parametrize("name", ["fast.toml", "full.toml"])
def test_shipped_configs_are_valid_and_build_their_model(name):
    from sodlib.engine.runs import build_run_model

    config = load_run_config(CHECKOUT_DIR / "configs" / name)
    assert config["model"]["name"] == "faster_rcnn"
    model = build_run_model(config, 7)
    assert model.transform.min_size == (config["model"]["min_size"],)
    assert apply_overrides(config, ["train.iterations=3"])["train"]["iterations"] == 3
    assert config["data"] == {"train": "embedded:train", "val": "embedded:val"}
    with pytest.raises(ValueError, match="unknown section"):
        apply_overrides({**config, "trian": {}}, [])
    with pytest.raises(ValueError, match="\\[data\\] train='mine'"):
        datasets_from_config({"data": {"train": "mine"}})


def test_resume_without_a_checkpoint_is_refused_unless_asked(config_file, tmp_path, capsys):
    run_dir = tmp_path / "fresh"
    assert main(["train", "--config", str(config_file), "--run-dir", str(run_dir), "--resume"]) == 2
    assert "nothing to continue" in capsys.readouterr().err
    assert main(["train", "--config", str(config_file), "--run-dir", str(run_dir), "--resume-if-present"]) == 0
    first = json.loads((run_dir / "history.json").read_text())["iterations"]
    # now there is a checkpoint: --resume-if-present continues it (nothing left to train at the same schedule)
    assert main(["train", "--config", str(config_file), "--run-dir", str(run_dir), "--resume-if-present"]) == 0
    assert json.loads((run_dir / "history.json").read_text())["iterations"] == first == 2
    assert main(["train", "--config", str(config_file), "--run-dir", str(tmp_path / "x"), "--set", "model.min_size=abc"]) == 2
    assert "min_size='abc' must be a whole number" in capsys.readouterr().err


def test_evaluate_maps_labels_by_the_checkpoints_categories_and_prints_a_table_per_category(config_file, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", "--config", str(config_file), "--run-dir", str(run_dir), "--set", "train.iterations=6"]) == 0
    data = json.loads((run_dir / "run_config.json").read_text())["data"]
    original = json.loads(Path(data["val_annotations"]).read_text())
    # the same categories under other ids, listed in another order
    renumber = {c["id"]: 100 - c["id"] for c in original["categories"]}
    shuffled = {**original, "categories": [{**c, "id": renumber[c["id"]]} for c in reversed(original["categories"])],
                "annotations": [{**a, "category_id": renumber[a["category_id"]]} for a in original["annotations"]]}
    (tmp_path / "shuffled.json").write_text(json.dumps(shuffled))
    renamed = {**original, "categories": [{**c, "name": c["name"] + "_x"} if i == 0 else c
                                          for i, c in enumerate(original["categories"])]}
    (tmp_path / "renamed.json").write_text(json.dumps(renamed))
    checkpoint = str(run_dir / "checkpoints" / "last.pt")
    figures = {}
    for name, annotation_file in (("original", data["val_annotations"]), ("shuffled", str(tmp_path / "shuffled.json"))):
        assert main(["evaluate", "--checkpoint", checkpoint, "--annotations", annotation_file, "--images", data["val_images"],
                     "--out", str(tmp_path / name), "--quiet"]) == 0
        figures[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    out = capsys.readouterr().out
    assert "per category" in out and "category" in out and "objects" in out
    assert {k: figures["shuffled"][k] for k in ("AP", "AP50", "APs")} == {k: figures["original"][k] for k in ("AP", "AP50", "APs")}
    per_category = {row["name"]: row["AP50"] for row in figures["original"]["per_category"]}
    assert per_category == {row["name"]: row["AP50"] for row in figures["shuffled"]["per_category"]}
    assert main(["evaluate", "--checkpoint", checkpoint, "--annotations", str(tmp_path / "renamed.json"), "--images",
                 data["val_images"], "--out", str(tmp_path / "renamed"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "trained on the categories" in err and "_x" in err and not (tmp_path / "renamed").exists()


def test_a_command_whose_reader_has_gone_stops_quietly():
    import subprocess
    import sys

    # the reader closes the pipe before the command prints, as `head` does after its lines
    process = subprocess.Popen([sys.executable, "-m", "sodlib", "models"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, cwd=CHECKOUT_DIR)
    process.stdout.close()
    _, err = process.communicate(timeout=120)
    assert process.returncode == 1 and b"Traceback" not in err and b"BrokenPipeError" not in err, err.decode()


def test_train_on_your_own_coco_files_from_flags(config_file, tmp_path, capsys):
    root = tmp_path / "mine"
    annotations = generate_synthetic_coco(root, 4, seed=9, image_size=96, workers=1, progress=False)
    run_dir = tmp_path / "run"
    assert main(["train", "--config", str(config_file), "--run-dir", str(run_dir), "--train-annotations", str(annotations),
                 "--train-images", str(root / "train"), "--val-annotations", "none"]) == 0
    data = json.loads((run_dir / "run_config.json").read_text())["data"]
    assert data["train_annotations"] == str(annotations) and data["train_images"] == str(root / "train")
    assert data["val"] == "none" and "val_annotations" not in data and not (run_dir / "metrics.json").exists()
    history = json.loads((run_dir / "history.json").read_text())["history"]
    ours = {image["id"] for image in json.loads(Path(annotations).read_text())["images"]}
    assert {i for row in history for i in row["image_ids"]["0"]} <= ours
    assert main(["train", "--config", str(config_file), "--run-dir", str(tmp_path / "r2"), "--train-annotations",
                 str(annotations)]) == 2
    assert "--train-annotations and --train-images go together" in capsys.readouterr().err


@pytest.fixture
def data_files(tiny_coco_files, tmp_path) -> tuple[Path, Path, Path]:
    """``(annotations, images, config)``: a tiny dataset in tmp_path and a run config that trains on it."""
    annotations, images = tiny_coco_files
    (tmp_path / "tiny.toml").write_text(tiny_run_config(annotations, images))
    return annotations, images, tmp_path / "tiny.toml"


@pytest.mark.parametrize("where, relation", [("images", "is the input"), ("inside", "lies inside the input folder"),
                                             ("dataset", "holds the input")])
def test_train_refuses_a_run_folder_on_its_data(data_files, tmp_path, capsys, where, relation):
    annotations, images, config = data_files
    run_dir = {"images": images, "inside": images / "run", "dataset": tmp_path}[where]
    before = file_digests(tmp_path)
    assert_refused(capsys, ["train", "--config", str(config), "--run-dir", str(run_dir), "--overwrite"],
                   "error: the run folder (--run-dir)", relation)
    assert file_digests(tmp_path) == before


def test_train_refuses_a_run_folder_in_the_embedded_data(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SODLIB_DATA_DIR", str(tmp_path / "datadir"))  # a stand-in, never generated: refused first
    (tmp_path / "datadir" / "embedded" / "train").mkdir(parents=True)
    (tmp_path / "datadir" / "embedded" / "train" / "000000000001.jpg").write_bytes(b"jpeg")
    config = tmp_path / "embedded.toml"
    config.write_text('[data]\ntrain = "embedded:train"\nval = "none"\n')
    before = file_digests(tmp_path)
    assert_refused(capsys, ["train", "--config", str(config), "--run-dir", str(tmp_path / "datadir" / "embedded" / "train")],
                   "is the input", "embedded/train")
    assert file_digests(tmp_path) == before


@pytest.mark.parametrize("where, relation", [("images", "is the input"), ("dataset", "holds the input"),
                                             ("checkpoints", "holds the input")])
def test_evaluate_refuses_an_output_on_its_inputs(data_files, tmp_path, capsys, where, relation):
    annotations, images, _ = data_files
    checkpoint = tmp_path / "run" / "checkpoints" / "last.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"refused before it is read")
    out = {"images": images, "dataset": tmp_path, "checkpoints": checkpoint.parent}[where]
    before = file_digests(tmp_path)
    assert_refused(capsys, ["evaluate", "--checkpoint", str(checkpoint), "--annotations", str(annotations), "--images",
                            str(images), "--out", str(out), "--quiet"], "error: the output folder (--out)", relation)
    assert file_digests(tmp_path) == before


def test_experiment_refuses_a_results_folder_on_the_data(data_files, tmp_path, monkeypatch, capsys):
    annotations, images, config = data_files
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "fast.toml").write_text(config.read_text())
    monkeypatch.setenv("SODLIB_CONFIGS", str(tmp_path / "configs"))
    before = file_digests(tmp_path)
    assert_refused(capsys, ["experiment", "fast_baseline", "--quick", "--results-dir", str(images)],
                   "error: the results folder (--results-dir)", "is the input")
    assert file_digests(tmp_path) == before


def test_an_experiment_row_can_evaluate_a_trained_run_again_with_test_options(config_file, tmp_path, monkeypatch):
    from sodlib.engine import experiments

    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "tiny.toml").write_text(config_file.read_text())
    monkeypatch.setenv("SODLIB_CONFIGS", str(configs))
    monkeypatch.setitem(experiments.EXPERIMENTS, "tiny_rows", experiments.Experiment(
        "a run and two evaluations of its weights", {"tiny": "tiny.toml"},
        evaluations={"tiny_again": ("tiny", {}), "tiny_one_box": ("tiny", {"box_detections_per_img": 1})}))
    record = experiments.run_experiment("tiny_rows", quick=True, results_dir=tmp_path / "results",
                                        runs_root=tmp_path / "runs")
    runs = record["runs"]
    assert record["complete"] and list(runs) == ["tiny", "tiny_again", "tiny_one_box"]
    assert runs["tiny"]["ms_per_image"] > 0 and runs["tiny_again"]["ms_per_image"] > 0
    assert runs["tiny_again"]["evaluated_from"] == "tiny" and runs["tiny_one_box"]["test_options"] == {"box_detections_per_img": 1}
    assert runs["tiny_again"]["metrics"] == runs["tiny"]["metrics"]  # the same weights, evaluated the same way
    assert runs["tiny_one_box"]["metrics"]["AR100"] <= runs["tiny"]["metrics"]["AR100"]
    assert runs["tiny_one_box"]["metrics"]["AR100"] == runs["tiny_one_box"]["metrics"]["AR1"]  # one box an image
    monkeypatch.setitem(experiments.EXPERIMENTS, "tiny_bad", experiments.Experiment(
        "a row of a run it does not train", {"tiny": "tiny.toml"}, evaluations={"other": ("missing", {})}))
    with pytest.raises(ValueError, match="row 'other' evaluates run 'missing', which it does not train"):
        experiments.run_experiment("tiny_bad", quick=True, results_dir=tmp_path / "results", runs_root=tmp_path / "runs")
