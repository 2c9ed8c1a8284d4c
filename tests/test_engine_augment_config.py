"""[data] oversample / copy_paste in run configurations, the augmentation configs, and experiment --seed."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sodlib.augment import OversampledDataset, SmallObjectCopyPaste
from sodlib.data import generate_synthetic_coco
from sodlib.data.paths import CHECKOUT_DIR
from sodlib.engine.runs import apply_overrides, check_run_config, datasets_from_config, load_run_config, run_training
from tests.engine_fixtures import one_thread, tiny_run_config  # noqa: F401  (one_thread is used through pytestmark)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("augment_config")
    annotations = generate_synthetic_coco(root / "data", 6, seed=4, image_size=96, workers=1, progress=False)
    return root, Path(annotations), root / "data" / "train"


def write_config(data, name: str, extra: str) -> Path:
    root, annotations, images = data
    path = root / name
    path.write_text(tiny_run_config(annotations, images, seed=3, data_extra=extra, train_extra="checkpoint_every = 0"))
    return path


def test_oversample_and_copy_paste_build_the_train_set_only(data):
    extra = 'oversample = 2\ncopy_paste = { strategy = "several", count = 3, probability = 0.5, edge_blur = 5 }'
    config = load_run_config(write_config(data, "both.toml", extra))
    train_set, val_set = datasets_from_config(config)
    assert isinstance(train_set, OversampledDataset) and train_set.factor == 2
    assert train_set.num_classes == val_set.num_classes
    assert len(train_set) == 6 + sum(train_set.has_small_objects)
    transform = train_set.dataset.transforms
    assert isinstance(transform, SmallObjectCopyPaste) and train_set.dataset.masks
    assert transform.probability == 0.5 and transform.return_masks is False
    assert transform.settings.strategy == "several" and transform.settings.count == 3 and transform.settings.edge_blur == 5
    assert val_set.transforms is None and not val_set.masks  # val untouched
    image, target = train_set[0]
    assert "masks" not in target and target["boxes"].shape[0] == target["labels"].shape[0]
    # the transform draws from the train seed: the same config gives the same augmented items
    first, second = datasets_from_config(config)[0], datasets_from_config(config)[0]
    assert all(torch.equal(first[i][0], second[i][0]) for i in range(4))
    plain = load_run_config(write_config(data, "plain.toml", ""))
    assert datasets_from_config(plain)[0].transforms is None


@pytest.mark.parametrize("extra, message", [
    ("oversample = 0.5", "oversample=0.5 must be a number >= 1"),
    ('oversample = "3x"', "must be a number >= 1"),
    ("oversample = true", "must be a number >= 1"),
    ('copy_paste = "all"', "copy_paste='all' must be a table"),
    ('copy_paste = { strategy = "most" }', "copy_paste"),
    ("copy_paste = { count = 0 }", "copy_paste"),
    ("copy_paste = { probability = 1.5 }", "probability"),
    ("copy_paste = { edge_blur = 4 }", "copy_paste"),
    ("copy_paste = { seed = 1 }", "unknown key"),
    ('flip = "yes"', "unknown key"),
])
def test_bad_augmentation_values_are_refused(data, extra, message):
    with pytest.raises(ValueError, match=message.replace("[", "\\[").replace(".", "\\.")):
        config = load_run_config(write_config(data, "bad.toml", extra))
        datasets_from_config(config)


def test_set_overrides_are_checked_too(data):
    config = load_run_config(write_config(data, "plain.toml", ""))
    assert apply_overrides(config, ["data.oversample=3"])["data"]["oversample"] == 3
    with pytest.raises(ValueError, match="oversample"):
        apply_overrides(config, ["data.oversample=0"])
    with pytest.raises(ValueError, match="copy_paste"):
        check_run_config({**config, "data": {"copy_paste": {"strategy": "none"}}})


@pytest.mark.parametrize("extra", ["oversample = 3", 'copy_paste = { strategy = "all", count = 1, probability = 1.0 }'])
def test_a_short_run_with_each_key(data, tmp_path, extra):
    config = load_run_config(write_config(data, "run.toml", extra))
    summary = run_training(config, tmp_path / "run")
    assert summary["iterations"] == 2 and "AP50" in summary["metrics"]
    assert json.loads((tmp_path / "run" / "run_config.json").read_text())["data"] == config["data"]


@pytest.mark.parametrize("name", ["fast_oversample2.toml", "fast_oversample3.toml", "fast_copy_paste.toml",
                                  "fast_copy_paste_several3.toml", "fast_copy_paste_overlap.toml",
                                  "fast_copy_paste_blur.toml"])
def test_augmentation_configs_are_fast_toml_plus_one_key(name):
    fast = load_run_config(CHECKOUT_DIR / "configs" / "fast.toml")
    config = load_run_config(CHECKOUT_DIR / "configs" / name)
    extra = {k: v for k, v in config["data"].items() if k not in fast["data"]}
    assert len(extra) == 1 and {k: v for k, v in config.items() if k != "data"} == {k: v for k, v in fast.items() if k != "data"}
    assert config["train"]["num_threads"] == 1


def test_augmentation_experiment_runs_exist_and_seed_names_the_file(data, tmp_path, monkeypatch):
    from sodlib.engine.experiments import EXPERIMENTS, run_experiment
    from sodlib.engine.runs import apply_overrides

    for experiment in EXPERIMENTS.values():  # every run's config exists and takes its overrides
        assert set(experiment.overrides) <= set(experiment.runs)
        for run_name, file_name in experiment.runs.items():
            config = apply_overrides(load_run_config(CHECKOUT_DIR / "configs" / file_name),
                                     list(experiment.overrides.get(run_name, ())))
            assert config["train"].get("num_threads") == 1 or run_name == "full"
    sweep = EXPERIMENTS["copy_paste_sweep"]
    assert apply_overrides(load_run_config(CHECKOUT_DIR / "configs" / "fast.toml"),
                           list(sweep.overrides["aug_only_oversample2"]))["data"] == {
        "train": "embedded:train", "val": "embedded:val", "oversample": 2,
        "copy_paste": {"strategy": "all", "count": 1, "probability": 1.0}}
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "fast.toml").write_text(write_config(data, "plain.toml", "").read_text())
    monkeypatch.setenv("SODLIB_CONFIGS", str(configs))
    record = run_experiment("fast_baseline", seed=5, results_dir=tmp_path / "results", runs_root=tmp_path / "runs")
    written = json.loads((tmp_path / "results" / "fast_baseline_seed5.json").read_text())
    assert written["seed"] == 5 and written["seeds"] == {"fast": 5} and written["complete"] is True
    assert record["path"].endswith("fast_baseline_seed5.json")
    with pytest.raises(ValueError, match="seed"):
        run_experiment("fast_baseline", seed=-1, results_dir=tmp_path / "results", runs_root=tmp_path / "runs")


def test_anchor_sets_experiment_uses_the_sizes_sodlib_anchors_derives(data):
    """The 'derived' row of anchor_sets is what the anchors command finds for the embedded train split at 384 px."""
    from sodlib.anchors import derive_anchor_sizes
    from sodlib.data import embedded_dataset
    from sodlib.engine.experiments import DERIVED_STRIDE16_ANCHORS, EXPERIMENTS
    from sodlib.engine.runs import apply_overrides
    from sodlib.stats import object_table

    annotations, _ = embedded_dataset("train")
    sides = object_table(str(annotations), resize=(384, 384)).box_sides
    derived = derive_anchor_sizes(sides[sides > 0], stride=16, iou_threshold=0.5, quantiles=(0.01, 0.99))
    assert tuple(round(size, 1) for size in derived.sizes) == DERIVED_STRIDE16_ANCHORS  # as the command prints them
    experiment = EXPERIMENTS["anchor_sets"]
    config = apply_overrides(load_run_config(CHECKOUT_DIR / "configs" / "fast.toml"), list(experiment.overrides["derived_40_100"]))
    assert config["model"]["fpn"] is False
    assert config["model"]["anchor_sizes"] == [sorted(list(DERIVED_STRIDE16_ANCHORS) + [40.0, 100.0])]
