"""The feature analysis of experiment efpn's stage-2 runs: errors by region and Fig. 6's windows."""
from __future__ import annotations

import json

import pytest
import torch

from sodlib.engine.checkpoint import save_checkpoint
from sodlib.engine.efpn_features import FEATURE_RUNS, PICTURE_RUNS, WINDOW, analyse_efpn_features
from sodlib.engine.runs import build_run_model, load_run_config
from sodlib.data.paths import CHECKOUT_DIR


def _write_runs(root, seed: int) -> None:
    """Untrained stage-2 models of the tiny configuration saved where experiment efpn writes its runs."""
    config = load_run_config(CHECKOUT_DIR / "configs" / "tiny_efpn.toml")
    config["model"].pop("init_from")
    torch.manual_seed(0)
    model = build_run_model(config, 7)
    for run in FEATURE_RUNS:
        save_checkpoint(root / f"efpn_seed{seed}" / run / "checkpoints" / "last.pt",
                        {"model": model.state_dict(), "model_config": model.build_options})


def test_feature_errors_and_pictures_are_written(tmp_path):
    _write_runs(tmp_path / "runs", 5)
    record = analyse_efpn_features(5, images=2, pictures=1, results_dir=tmp_path / "results", runs_root=tmp_path / "runs")
    written = json.loads((tmp_path / "results" / "efpn_features_seed5.json").read_text())
    assert written["seed"] == 5 and set(written["runs"]) == set(FEATURE_RUNS)
    for levels in written["runs"].values():
        for level in ("p2", "p3"):
            assert levels[level]["object_cells"] > 0 and levels[level]["background_cells"] > levels[level]["object_cells"]
            assert levels[level]["object"] >= 0 and levels[level]["background"] >= 0
    picture = written["pictures"][0]
    assert len(picture["image"]) == WINDOW and len(picture["teacher P2 (2x input)"]) == WINDOW // 2
    assert len(picture["FPN P2 (1x)"]) == WINDOW // 4
    assert all(len(picture[label]) == WINDOW // 2 for label in PICTURE_RUNS)
    x1, y1, x2, y2 = picture["box"]
    assert 0 < x1 < x2 < WINDOW and 0 < y1 < y2 < WINDOW  # the object sits inside its window
    assert record["path"].endswith("efpn_features_seed5.json")


def test_missing_runs_name_the_experiment_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m sodlib experiment efpn --seed 3"):
        analyse_efpn_features(3, runs_root=tmp_path)
