"""EFPN's staged schedule through the engine: configs that start from another run's checkpoint."""
from __future__ import annotations

import pytest
import torch

from sodlib.data.paths import CHECKOUT_DIR
from sodlib.engine.checkpoint import save_checkpoint
from sodlib.engine.experiments import EXPERIMENTS, _resolve_earlier_runs
from sodlib.engine.runs import apply_overrides, build_run_model, load_run_config

TINY = {name: CHECKOUT_DIR / "configs" / f"{name}.toml" for name in ("tiny_fpn", "tiny_efpn", "tiny_efpn_head")}


def _baseline_checkpoint(path):
    config = load_run_config(TINY["tiny_fpn"])
    torch.manual_seed(0)
    model = build_run_model(config, 7)
    save_checkpoint(path, {"model": model.state_dict(), "model_config": model.build_options})
    return model


@pytest.mark.parametrize("name", list(TINY))
def test_the_stage_configs_are_valid_and_read_the_tiny_data(name):
    config = load_run_config(TINY[name])
    assert config["data"] == {"train": "embedded_tiny:train", "val": "embedded_tiny:val"}
    assert config["evaluate"]["f1_score_threshold"] == 0.5


def test_stage_2_starts_from_the_baselines_weights(tmp_path):
    baseline = _baseline_checkpoint(tmp_path / "fpn" / "last.pt")
    config = apply_overrides(load_run_config(TINY["tiny_efpn"]), [f'model.init_from="{tmp_path / "fpn" / "last.pt"}"'])
    model = build_run_model(config, 7)
    for key, value in baseline.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert model.stage == 2 and model.backbone.sr_name == "ftt"


def test_stage_3_copies_the_original_head_into_the_p2_head(tmp_path):
    _baseline_checkpoint(tmp_path / "fpn.pt")
    stage2 = build_run_model(apply_overrides(load_run_config(TINY["tiny_efpn"]), [f'model.init_from="{tmp_path / "fpn.pt"}"']), 7)
    save_checkpoint(tmp_path / "stage2.pt", {"model": stage2.state_dict(), "model_config": stage2.build_options})
    stage3 = build_run_model(apply_overrides(load_run_config(TINY["tiny_efpn_head"]), [f'model.init_from="{tmp_path / "stage2.pt"}"']), 7)
    heads = stage3.roi_heads
    assert torch.equal(heads.small_box_predictor.cls_score.weight, heads.box_predictor.cls_score.weight)
    assert torch.equal(stage3.backbone.lateral.weight, stage2.backbone.lateral.weight)


def test_init_from_errors_name_the_fix(tmp_path):
    config = load_run_config(TINY["tiny_efpn"])
    with pytest.raises(ValueError, match="only `python -m sodlib experiment` resolves"):
        build_run_model(config, 7)
    missing = apply_overrides(config, [f'model.init_from="{tmp_path / "nothing.pt"}"'])
    with pytest.raises(FileNotFoundError, match="train that run first"):
        build_run_model(missing, 7)
    other = apply_overrides(load_run_config(TINY["tiny_fpn"]), ["model.fpn_channels=16"])
    torch.manual_seed(0)
    narrow = build_run_model(other, 7)
    save_checkpoint(tmp_path / "narrow.pt", {"model": narrow.state_dict(), "model_config": narrow.build_options})
    with pytest.raises(ValueError, match="init_from=.*narrow.pt"):
        build_run_model(apply_overrides(config, [f'model.init_from="{tmp_path / "narrow.pt"}"']), 7)
    with pytest.raises(ValueError, match="init_from=3 must be the path"):
        apply_overrides(config, ["model.init_from=3"])


def test_an_experiment_run_may_only_start_from_an_earlier_run(tmp_path):
    configs = {"fpn": load_run_config(TINY["tiny_fpn"]), "stage2": load_run_config(TINY["tiny_efpn"])}
    configs["stage2"]["model"]["init_from"] = "run:fpn"
    _resolve_earlier_runs("demo", configs, tmp_path)
    assert configs["stage2"]["model"]["init_from"] == str(tmp_path / "fpn" / "checkpoints" / "last.pt")
    backwards = {"stage2": load_run_config(TINY["tiny_efpn"]), "fpn": load_run_config(TINY["tiny_fpn"])}
    with pytest.raises(ValueError, match="starts from run 'fpn', which is not one of the runs before it"):
        _resolve_earlier_runs("demo", backwards, tmp_path)


def test_the_efpn_experiment_chains_its_stages_in_order():
    experiment = EXPERIMENTS["efpn"]
    order = list(experiment.runs)
    assert order.index("fpn") < order.index("efpn_stage2") < order.index("efpn")
    assert order.index("efpn_nearest_stage2") < order.index("efpn_nearest")
    for row, (run, _) in experiment.evaluations.items():
        assert run in experiment.runs, row
