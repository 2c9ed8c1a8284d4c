"""The capstone's definition: its trained rows, the derived anchors it uses, the rows of whole and sliced
inference, and its command's refusals."""
from __future__ import annotations

import pytest

from sodlib.data.paths import CHECKOUT_DIR
from sodlib.engine.experiments import (DERIVED_LARGE_STRIDE4_ANCHORS, DERIVED_TINY_STRIDE4_ANCHORS, EXPERIMENTS,
                                       TINY_TILE_SCALE, configs_dir)
from sodlib.engine.runs import apply_overrides, check_run_config, load_run_config


def _configs(name="capstone_training"):
    experiment = EXPERIMENTS[name]
    return {run: check_run_config(apply_overrides(load_run_config(configs_dir() / name),
                                                  list(experiment.overrides.get(run, ()))))
            for run, name in experiment.runs.items()}


def test_every_row_trains_the_same_backbone_on_the_same_tiles_and_budget():
    configs = _configs()
    assert list(configs) == ["baseline", "anchors", "copy_paste", "rfcn", "efpn_stage2", "efpn", "combined"]
    for run, config in configs.items():
        assert config["data"]["train"] == "embedded_large:train" and config["data"]["val"] == "embedded_large:val"
        assert config["data"]["tiles"] == {"size": 512, "overlap": 0.2, "full_image": True}
        assert config["model"]["backbone"] == "resnet_tiny" and config["model"]["min_size"] == 512
        assert config["train"]["batch_size"] == 4 and config["train"]["num_threads"] == 1
        steps = config["train"]["iterations"]
        assert steps == (200 if run.startswith("efpn") else 600), run
    assert configs["efpn_stage2"]["model"]["init_from"] == "run:baseline"
    assert configs["efpn"]["model"]["init_from"] == "run:efpn_stage2"
    assert configs["rfcn"]["model"]["pooling"] == "ps_prroi"
    assert "copy_paste" not in configs["baseline"]["data"] and "copy_paste" not in configs["anchors"]["data"]
    assert configs["combined"]["data"]["copy_paste"] == configs["copy_paste"]["data"]["copy_paste"]
    assert configs["combined"]["model"]["anchor_sizes"] == configs["anchors"]["model"]["anchor_sizes"]
    assert configs["anchors"]["model"]["anchor_sizes"] == [[13.66], [27.3], [54.5], [109.0], [218.0]]
    for run in ("baseline", "copy_paste", "rfcn", "efpn_stage2", "efpn"):
        assert configs[run]["model"]["anchor_sizes"] in ([[8.0], [16.0], [32.0], [64.0], [128.0]],
                                                         [8.0, 16.0, 32.0, 64.0, 128.0])


def test_the_derived_anchors_are_what_sodlib_anchors_derives_for_the_large_images():
    """As ``python -m sodlib anchors --annotations <embedded_large train> --stride 4`` prints them."""
    from sodlib.anchors import derive_anchor_sizes
    from sodlib.data import embedded_large_dataset
    from sodlib.stats import object_table

    annotations, _ = embedded_large_dataset("train")
    sides = object_table(str(annotations)).box_sides
    derived = derive_anchor_sizes(sides[sides > 0], stride=4, iou_threshold=0.5)
    assert tuple(round(size, 2) for size in derived.sizes) == DERIVED_LARGE_STRIDE4_ANCHORS
    assert derived.min_matchable_size == pytest.approx(9.657, abs=1e-3)


def test_the_tiny_benchmark_trains_the_same_rows_on_the_tiny_data_at_the_tiles_scale():
    configs = _configs("capstone_tiny_training")
    assert list(configs) == list(_configs())
    for run, config in configs.items():
        assert config["data"]["train"] == "embedded_tiny:train" and config["data"]["val"] == "embedded_tiny:val"
        assert config["data"]["tiles"] == {"size": 320, "overlap": 0.2, "full_image": True}
        assert config["model"]["backbone"] == "resnet_tiny"
        assert config["model"]["min_size"] == config["model"]["max_size"] == 448
        assert config["train"]["batch_size"] == 4 and config["train"]["num_threads"] == 1
        assert config["train"]["iterations"] == (200 if run.startswith("efpn") else 700), run
    assert 448 / configs["baseline"]["data"]["tiles"]["size"] == TINY_TILE_SCALE
    assert configs["efpn_stage2"]["model"]["init_from"] == "run:baseline"
    assert configs["efpn"]["model"]["init_from"] == "run:efpn_stage2"
    assert configs["rfcn"]["model"]["pooling"] == "ps_prroi"
    assert configs["combined"]["data"]["copy_paste"] == configs["copy_paste"]["data"]["copy_paste"]
    assert configs["combined"]["model"]["anchor_sizes"] == configs["anchors"]["model"]["anchor_sizes"]
    assert configs["anchors"]["model"]["anchor_sizes"] == [[13.66], [27.3], [54.5], [108.9], [218.0]]
    assert "copy_paste" not in configs["baseline"]["data"] and "copy_paste" not in configs["anchors"]["data"]


def test_the_tiny_derived_anchors_are_what_sodlib_anchors_derives_at_the_tiles_scale():
    """As ``python -m sodlib anchors --annotations <embedded_tiny train> --stride 4 --resize 896 896`` prints them:
    the 640 px images at 1.4x, the scale a 320 px tile is shown at."""
    from sodlib.anchors import derive_anchor_sizes
    from sodlib.data import embedded_tiny_dataset
    from sodlib.stats import object_table

    annotations, _ = embedded_tiny_dataset("train")
    sides = object_table(str(annotations)).box_sides
    derived = derive_anchor_sizes(sides[sides > 0] * TINY_TILE_SCALE, stride=4, iou_threshold=0.5)
    assert tuple(round(size, 2) for size in derived.sizes) == DERIVED_TINY_STRIDE4_ANCHORS


def test_each_benchmark_slices_as_its_detectors_were_trained():
    pytest.importorskip("sahi")
    from sodlib.integrations.capstone import BENCHMARKS

    for name, bench in BENCHMARKS.items():
        configs = _configs(bench.training_experiment)
        assert bench.slicing.size == configs["baseline"]["data"]["tiles"]["size"], name
        assert bench.slicing.overlap == configs["baseline"]["data"]["tiles"]["overlap"], name
    assert BENCHMARKS["capstone"].native_size == 1600 and BENCHMARKS["capstone_tiny"].native_size == 640


def test_every_detector_is_evaluated_whole_and_sliced_and_the_baseline_at_its_native_size():
    pytest.importorskip("sahi")
    from sodlib.integrations.capstone import inference_rows

    rows = inference_rows(list(EXPERIMENTS["capstone_training"].runs))
    assert "efpn_stage2" not in rows and "efpn_stage2_sliced" not in rows  # a stage, finished by efpn
    assert rows["baseline_native"] == ("baseline", "native")
    for run in ("baseline", "anchors", "copy_paste", "rfcn", "efpn", "combined"):
        assert rows[run] == (run, "full") and rows[f"{run}_sliced"] == (run, "sliced")
    assert len(rows) == 13


def test_the_capstone_command_is_listed_and_refuses_set(capsys):
    from sodlib.cli import main
    from tests.conftest import assert_refused

    assert main(["experiment", "list"]) == 0
    listed = capsys.readouterr().out
    assert "capstone " in listed and "capstone_tiny " in listed
    for name in ("capstone", "capstone_tiny"):
        assert_refused(capsys, ["experiment", name, "--set", "train.iterations=3"], f"{name!r} takes no --set")
        assert_refused(capsys, ["experiment", name, "--seed", "-1"], "seed=-1 must be a non-negative integer")


def test_the_configs_say_how_to_run_them():
    for name in ("large_fpn", "large_rfcn", "large_efpn", "large_efpn_head"):
        text = (CHECKOUT_DIR / "configs" / f"{name}.toml").read_text()
        assert f"configs/{name}.toml" in text
