"""Named experiments too long for a notebook's test run: ``python -m sodlib experiment NAME``.

Each trains and evaluates one or more run configurations from ``configs/`` (run folders under
``runs/experiments/NAME/``) and writes ``notebooks/results/NAME.json``::

    {"name", "description", "command", "seeds", "hardware", "load_average_before", "started_utc", "duration_s",
     "runs": {run: {"config", "iterations", "train_seconds", "metrics", "ms_per_image", "final_losses", "hardware"}}}

A row may also be the weights of another run evaluated again with test-time options changed (``evaluations``:
box refinement, another NMS): ``{"evaluated_from": run, "test_options", "metrics", "ms_per_image", "hardware"}``,
so that its difference from that run is the test-time step alone.

(``hardware`` of a run is taken in the run's own thread setting; the 1, 5 and 15 minute load averages
before and after tell how much of the machine other work took.)

The notebooks show these tables beside a short live run and say which is which. ``--quick`` runs a few steps
only (to check the pipeline; its numbers mean nothing) and writes ``NAME_quick.json``; ``--set SECTION.KEY=VALUE``
changes the configuration (a shorter schedule, another thread count) and writes ``NAME_custom.json``;
``--seed S`` sets ``[train] seed = S`` in every run (the model's initialisation, the data order, the flips and
the augmentation's draws) and writes ``NAME_seedS.json``, so that several seeds give several files.
The json is rewritten after every run (``"complete": false`` until the last one), so an interrupted experiment
keeps the runs it finished.
"""
from __future__ import annotations

import datetime
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sodlib.data.files import check_output_apart_from_inputs
from sodlib.data.paths import CHECKOUT_DIR
from sodlib.engine.runs import (apply_overrides, check_run_dir, data_paths, evaluate_trained_run, hardware_description,
                                load_run_config, run_training)

__all__ = ["Experiment", "EXPERIMENTS", "run_experiment", "load_experiment_results", "configs_dir", "default_results_dir"]

QUICK_OVERRIDES = {"iterations": 4, "batch_size": 2, "warmup_iterations": 2, "checkpoint_every": 0}


@dataclass(frozen=True)
class Experiment:
    """A named experiment: what it shows, and its runs (run name -> config file in ``configs/``).

    ``overrides`` (run name -> ``SECTION.KEY=VALUE`` strings) change a run's configuration the way ``--set``
    does, so that a sweep over one key needs one config file, not one per value. ``evaluations`` (row name ->
    (run name, model options)) evaluate a trained run's weights again with test-time model options changed."""

    description: str
    runs: dict[str, str]  # run name -> config file name in configs/
    overrides: dict[str, tuple[str, ...]] = field(default_factory=dict)
    evaluations: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)


def _paste(strategy: str, count: int, probability: float = 0.5) -> str:
    """The override that sets ``[data] copy_paste`` (JSON, as ``--set`` reads it)."""
    return "data.copy_paste=" + json.dumps({"strategy": strategy, "count": count, "probability": probability})


# Kisantal et al. Tables 3-7 (R9-R11): paste counts per strategy, 4x oversampling, augmented images only
# (every image with a small object replaced by its augmented copy) and augmented only + 2x oversampling.
# Baseline, all x1 and several x3 are runs of the "augmentation" experiment with the same seeds.
_SWEEP = {
    "one1": _paste("one", 1), "one2": _paste("one", 2), "one3": _paste("one", 3), "one5": _paste("one", 5),
    "several1": _paste("several", 1), "several5": _paste("several", 5),
    "all2": _paste("all", 2), "all3": _paste("all", 3),
    "oversample4": "data.oversample=4",
    "aug_only": _paste("all", 1, 1.0),
}


# Krishna and Jawahar's Table I (R17) on one stride-16 map: the default sizes, Chen et al.'s, the set that
# `python -m sodlib anchors --annotations <embedded train> --stride 16 --resize 384 384` derives (worst placement,
# IoU 0.5; a test holds these values to sodlib.anchors), and that set plus 40 and 100 as the seed's last row.
DERIVED_STRIDE16_ANCHORS = (54.6, 109.2, 218.3)
_ANCHOR_SETS = {
    "default": (128.0, 256.0, 512.0),
    "chen": (16.0, 40.0, 100.0),
    "derived": DERIVED_STRIDE16_ANCHORS,
    "derived_40_100": tuple(sorted(DERIVED_STRIDE16_ANCHORS + (40.0, 100.0))),
}


def _single_level(sizes: tuple[float, ...]) -> tuple[str, ...]:
    """Overrides for one stride-16 map (conv4, no pyramid) with anchors of ``sizes``."""
    return ("model.fpn=false", "model.anchor_sizes=" + json.dumps([list(sizes)]))


# Deng et al.'s EFPN ablations (Tables II-V, R25-R28) on the embedded tiny-object data: one FPN baseline, then
# stage-2 variants of the extension (all from the baseline's weights) and stage 3 for EFPN and EFPN without FTT.
_ESPCN = ('model.sr_module="espcn"', "model.distill_p3=false")
_EFPN_RUNS = {
    "fpn": ("tiny_fpn.toml", ()),
    "efpn_stage2": ("tiny_efpn.toml", ()),
    "efpn": ("tiny_efpn_head.toml", ()),
    "efpn_nearest_stage2": ("tiny_efpn.toml", ('model.sr_module="nearest"',)),
    "efpn_nearest": ("tiny_efpn_head.toml", ('model.sr_module="nearest"', 'model.init_from="run:efpn_nearest_stage2"')),
    "espcn_detection": ("tiny_efpn.toml", _ESPCN + ('model.distill_loss="none"', "model.detection_loss=true")),
    "espcn_global": ("tiny_efpn.toml", _ESPCN + ('model.distill_loss="global"',)),
    "espcn_fbb": ("tiny_efpn.toml", _ESPCN),
    "espcn_fbb_p3": ("tiny_efpn.toml", ('model.sr_module="espcn"',)),
    "efpn_stage2_lambda0.5": ("tiny_efpn.toml", ("model.fbb_lambda=0.5",)),
    "efpn_stage2_lambda1.5": ("tiny_efpn.toml", ("model.fbb_lambda=1.5",)),
}

# The capstone's trained rows (the inference rows, whole and sliced, are sodlib.integrations.capstone's) on the
# embedded large-image data. The derived anchors are what `python -m sodlib anchors --annotations <embedded_large
# train> --stride 4` finds (worst placement, IoU 0.5; a test holds them to sodlib.anchors), one size per level on
# P2, P3 and P4 as FPN places them, doubling on P5 and P6. The combination is fixed before any result: the derived
# anchors with copy-paste, the two data-side changes that leave the detector as it is.
DERIVED_LARGE_STRIDE4_ANCHORS = (13.66, 27.3, 54.5)
_LARGE_ANCHORS = "model.anchor_sizes=" + json.dumps(
    [[size] for size in DERIVED_LARGE_STRIDE4_ANCHORS + (109.0, 218.0)])
_CAPSTONE_PASTE = _paste("all", 1)

# The capstone on the embedded tiny-object data (640 px images, the EFPN experiment's): the configs of experiment
# efpn with 320 px tiles overlapping by 20 % plus the whole image. The detector's 448 px input shows a tile at 1.4x
# its pixels and the whole image at 0.7x, so slicing doubles the scale, EFPN's super-resolution factor. The derived
# anchors are what `python -m sodlib anchors --annotations <embedded_tiny train> --stride 4 --resize 896 896`
# finds (the objects at the tiles' scale; a test holds them), doubling on P6. R-FCN is configs/large_rfcn.toml's
# detector moved to this data, input size and schedule (700 steps, as configs/tiny_fpn.toml).
TINY_TILE_SCALE = 448 / 320
DERIVED_TINY_STRIDE4_ANCHORS = (13.66, 27.3, 54.5, 108.9)
_TINY_TILES = 'data.tiles={"size": 320, "overlap": 0.2, "full_image": true}'
_TINY_ANCHORS = "model.anchor_sizes=" + json.dumps([[size] for size in DERIVED_TINY_STRIDE4_ANCHORS + (218.0,)])
_TINY_RFCN = ('data.train="embedded_tiny:train"', 'data.val="embedded_tiny:val"', "model.min_size=448",
              "model.max_size=448", "train.iterations=700")

EXPERIMENTS: dict[str, Experiment] = {
    "fast_baseline": Experiment("the fast configuration (resnet_tiny, 384 px, about 3 minutes on 2 CPU cores) on the embedded data",
                                {"fast": "fast.toml"}),
    "full_baseline": Experiment("the full configuration (resnet_narrow, 512 px, a longer schedule) on the embedded data",
                                {"full": "full.toml"}),
    "augmentation": Experiment("Kisantal et al.'s augmentations on the fast configuration (embedded data, one thread): "
                               "baseline, oversampling 2x / 3x, copy-paste of all small objects once with probability "
                               "0.5 (original + augmented), several objects 3 times, with overlap allowed, with a 5 px "
                               "edge blur",
                               {"baseline": "fast.toml", "oversample3": "fast_oversample3.toml",
                                "copy_paste": "fast_copy_paste.toml", "several3": "fast_copy_paste_several3.toml",
                                "oversample2": "fast_oversample2.toml", "copy_paste_overlap": "fast_copy_paste_overlap.toml",
                                "copy_paste_blur": "fast_copy_paste_blur.toml"}),
    "copy_paste_sweep": Experiment("Kisantal et al.'s paste counts per strategy (one object 1 / 2 / 3 / 5 times, several "
                                   "objects 1 / 5 times, all small objects 2 / 3 times, each image with probability 0.5), "
                                   "4x oversampling, augmented images only (probability 1) and augmented only with 2x "
                                   "oversampling, on the fast configuration (embedded data, one thread)",
                                   {**{run: "fast.toml" for run in _SWEEP}, "aug_only_oversample2": "fast.toml"},
                                   {**{run: (override,) for run, override in _SWEEP.items()},
                                    "aug_only_oversample2": (_SWEEP["aug_only"], "data.oversample=2")}),
    "rfcn_pooling": Experiment("R-FCN's position-sensitive pooling in a trained detector (Zhang et al., 2021, Table 2, "
                               "and what it lacks): Faster R-CNN with the same backbone, R-FCN with PS-RoI pooling, with "
                               "PS-RoIAlign, precise R-FCN (PS-PrRoI), precise R-FCN with 3x size-aware oversampling, "
                               "precise R-FCN with IoU-Net's IoU branch and, on its weights, 5 steps of box refinement, "
                               "IoU-guided NMS and both; the fast setting (resnet_tiny, 384 px, embedded data, one thread)",
                               {"faster_rcnn": "fast.toml", "rfcn_ps_roi_pool": "fast_rfcn.toml",
                                "rfcn_ps_roi_align": "fast_rfcn.toml", "precise_rfcn": "fast_rfcn.toml",
                                "precise_rfcn_oversample3": "fast_rfcn.toml", "precise_rfcn_iou": "fast_rfcn.toml"},
                               {"rfcn_ps_roi_pool": ('model.pooling="ps_roi_pool"',),
                                "rfcn_ps_roi_align": ('model.pooling="ps_roi_align"',),
                                "precise_rfcn_oversample3": ("data.oversample=3",),
                                "precise_rfcn_iou": ("model.iou_head=true",)},
                               {"precise_rfcn_iou_refine": ("precise_rfcn_iou", {"refine_steps": 5}),
                                "precise_rfcn_iou_nms": ("precise_rfcn_iou", {"iou_guided_nms": True}),
                                "precise_rfcn_iou_nms_refine": ("precise_rfcn_iou", {"iou_guided_nms": True,
                                                                                     "refine_steps": 5})}),
    "anchor_sets": Experiment("Krishna and Jawahar's anchor sets (2017, Table I) on one stride-16 map: the default "
                              "{128, 256, 512}, Chen et al.'s {16, 40, 100}, the set sodlib.anchors derives for the "
                              "embedded data at 384 px (worst placement, IoU 0.5) and that set plus 40 and 100; the fast "
                              "setting (resnet_tiny conv4, 384 px, embedded data, one thread)",
                              {run: "fast.toml" for run in _ANCHOR_SETS},
                              {run: _single_level(sizes) for run, sizes in _ANCHOR_SETS.items()}),
    "efpn": Experiment("Deng et al.'s EFPN (2021, Tables II-V) on the embedded tiny-object data (640 px images resized "
                       "to 448, nine objects in ten under 0.2 % of the image): the FPN baseline; EFPN's stage 2 (FTT, "
                       "distilled with the balanced loss on P'2 and P'3) and stage 3 (a P'2 head with OHEM); the same "
                       "with nearest-neighbour upsampling instead of FTT; stage 2 with a three-layer ESPCN trained by the "
                       "detection loss alone, by the global L1, by the balanced loss, and by the balanced loss on P'3 too; "
                       "FTT with lambda 0.5 and 1.5; and, on these weights, FPN tested at 2x, FPN 1x with the 2x input's "
                       "P2 and P3 as the extension (the oracle), and detection read from P3, P3 of the 2x input and FTT's "
                       "P'3 alone (resnet_tiny, one thread)",
                       {run: config for run, (config, _) in _EFPN_RUNS.items()},
                       {run: overrides for run, (_, overrides) in _EFPN_RUNS.items() if overrides},
                       {"fpn_2x": ("fpn", {"min_size": 896, "max_size": 896}),
                        "fpn_1x_teacher_p2": ("efpn_stage2", {"extended_source": "teacher"}),
                        "probe_p3": ("efpn_stage2", {"probe": "p3"}),
                        "probe_p3_2x": ("efpn_stage2", {"probe": "p3_2x"}),
                        "probe_p3_extended": ("efpn_stage2", {"probe": "p3_extended"})}),
    "capstone_training": Experiment("the capstone's detectors on the embedded large-image data (1600 px images, 33 "
                                    "objects of 4-32 px each), trained on 512 px tiles overlapping by 20 % plus the "
                                    "whole image, the same backbone (resnet_tiny) and 600 steps of 4: Faster R-CNN "
                                    "with an FPN; with anchors derived at stride 4; with copy-paste of all small "
                                    "objects once (probability 0.5); precise R-FCN (PS-PrRoI); EFPN's stages 2 and 3 "
                                    "(200 steps each) on the baseline; derived anchors with copy-paste (one thread). "
                                    "`experiment capstone` adds whole-image and sliced inference of each",
                                    {"baseline": "large_fpn.toml", "anchors": "large_fpn.toml",
                                     "copy_paste": "large_fpn.toml", "rfcn": "large_rfcn.toml",
                                     "efpn_stage2": "large_efpn.toml", "efpn": "large_efpn_head.toml",
                                     "combined": "large_fpn.toml"},
                                    {"anchors": (_LARGE_ANCHORS,), "copy_paste": (_CAPSTONE_PASTE,),
                                     "combined": (_LARGE_ANCHORS, _CAPSTONE_PASTE)}),
    "capstone_tiny_training": Experiment("the capstone's detectors on the embedded tiny-object data (640 px images, "
                                         "nine objects in ten under 0.2 % of the image), trained on 320 px tiles "
                                         "overlapping by 20 % plus the whole image at a 448 px input, the same "
                                         "backbone (resnet_tiny) and 700 steps of 4: the rows of capstone_training "
                                         "with anchors derived at the tiles' scale (one thread). `experiment "
                                         "capstone_tiny` adds whole-image and sliced inference of each",
                                         {"baseline": "tiny_fpn.toml", "anchors": "tiny_fpn.toml",
                                          "copy_paste": "tiny_fpn.toml", "rfcn": "large_rfcn.toml",
                                          "efpn_stage2": "tiny_efpn.toml", "efpn": "tiny_efpn_head.toml",
                                          "combined": "tiny_fpn.toml"},
                                         {"baseline": (_TINY_TILES,), "anchors": (_TINY_TILES, _TINY_ANCHORS),
                                          "copy_paste": (_TINY_TILES, _CAPSTONE_PASTE),
                                          "rfcn": (_TINY_TILES,) + _TINY_RFCN,
                                          "efpn_stage2": (_TINY_TILES, 'model.init_from="run:baseline"'),
                                          "efpn": (_TINY_TILES,),
                                          "combined": (_TINY_TILES, _TINY_ANCHORS, _CAPSTONE_PASTE)}),
}


def _resolve_earlier_runs(name: str, configs: dict[str, dict[str, Any]], folder: Path) -> None:
    """``[model] init_from = "run:NAME"`` -> the final checkpoint of run ``NAME`` of this experiment, which must
    come earlier (a staged schedule: stage 2 starts from stage 1's weights)."""
    order = list(configs)
    for run_name, config in configs.items():
        source = config["model"].get("init_from")
        if isinstance(source, str) and source.startswith("run:"):
            earlier = source.removeprefix("run:")
            if earlier not in order[:order.index(run_name)]:
                raise ValueError(f"experiment {name!r}: run {run_name!r} starts from run {earlier!r}, which is not one "
                                 f"of the runs before it ({', '.join(order[:order.index(run_name)]) or 'none'})")
            config["model"]["init_from"] = str(folder / earlier / "checkpoints" / "last.pt")


def configs_dir() -> Path:
    """``configs/`` of the source checkout (``$SODLIB_CONFIGS`` overrides)."""
    return Path(os.environ.get("SODLIB_CONFIGS", CHECKOUT_DIR / "configs"))


def default_results_dir() -> Path:
    """``notebooks/results/`` of the source checkout."""
    return CHECKOUT_DIR / "notebooks" / "results"


def run_experiment(name: str, *, quick: bool = False, overrides: list[str] | None = None,
                   results_dir: str | os.PathLike | None = None, runs_root: str | os.PathLike | None = None,
                   command: str | None = None, seed: int | None = None) -> dict[str, Any]:
    """Run experiment ``name`` and write its results json; returns the record (with its ``path``).

    ``overrides`` (``["train.epochs=12"]``) change every run's configuration; the record keeps the configuration
    as run, and a run with overrides is written as ``NAME_custom.json`` so that it never passes for the
    configuration in ``configs/``. ``seed`` sets ``[train] seed`` of every run and writes ``NAME_seedS.json``
    (``NAME_seedS_custom.json`` with overrides too). Every configuration is read and checked before the first
    run, and so are the folders: no run folder and no ``results_dir`` may be, lie inside or hold the data a run
    reads."""
    if name not in EXPERIMENTS:
        raise ValueError(f"experiment {name!r} is unknown; known: {', '.join(EXPERIMENTS)} (python -m sodlib experiment list)")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"seed={seed!r} must be a non-negative integer")
    experiment = EXPERIMENTS[name]
    for row, (run_name, _) in experiment.evaluations.items():
        if run_name not in experiment.runs:
            raise ValueError(f"experiment {name!r}: row {row!r} evaluates run {run_name!r}, which it does not train")
    seed_overrides = [f"train.seed={seed}"] if seed is not None else []
    configs = {}
    for run_name, file_name in experiment.runs.items():  # read and check every config before any work
        run_overrides = list(experiment.overrides.get(run_name, ()))
        config = apply_overrides(load_run_config(configs_dir() / file_name), run_overrides + list(overrides or []) + seed_overrides)
        if quick:
            config["train"].update(QUICK_OVERRIDES)
        configs[run_name] = config
    base = f"{name}_seed{seed}" if seed is not None else name
    tag = f"{base}_quick" if quick else f"{base}_custom" if overrides else base
    runs_root = Path(runs_root) if runs_root is not None else CHECKOUT_DIR / "runs" / "experiments"
    _resolve_earlier_runs(name, configs, runs_root / tag)
    out = Path(results_dir) if results_dir is not None else default_results_dir()
    for run_name, config in configs.items():  # no folder written over, into or around the data it reads
        check_run_dir(config, runs_root / tag / run_name, what=f"run {run_name!r}'s folder")
        check_output_apart_from_inputs(out, data_paths(config), what="the results folder (--results-dir)")
    hardware_before = hardware_description()
    started = time.perf_counter()
    started_utc = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{tag}.json"
    runs: dict[str, Any] = {}
    rows = len(configs) + len(experiment.evaluations)
    for run_name, config in configs.items():
        summary = run_training(config, runs_root / tag / run_name, command=command)
        runs[run_name] = {k: summary.get(k) for k in ("config", "iterations", "train_seconds", "total_seconds", "metrics",
                                                      "ms_per_image", "final_losses", "hardware")}
        for row, (trained, test_options) in experiment.evaluations.items():
            if trained == run_name:
                runs[row] = {"evaluated_from": run_name,
                             **evaluate_trained_run(config, runs_root / tag / run_name, test_options)}
        record = {"name": name, "description": experiment.description, "quick": quick, "overrides": list(overrides or []),
                  "seed": seed, "command": command,
                  "seeds": {run: config["train"].get("seed", 0) for run, config in configs.items()},
                  "hardware": hardware_description(), "load_average_before": hardware_before.get("load_average"),
                  "started_utc": started_utc, "complete": len(runs) == rows,
                  "duration_s": round(time.perf_counter() - started, 1), "runs": dict(runs)}
        temporary = path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(record, indent=2))
        temporary.replace(path)  # never a half-written file
    record["path"] = str(path)
    return record


def load_experiment_results(name: str, results_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """The results json that ``python -m sodlib experiment NAME`` wrote (``NAME_quick`` / ``NAME_custom`` for
    those runs), for a notebook to show beside its live run."""
    path = (Path(results_dir) if results_dir is not None else default_results_dir()) / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; fix: run `python -m sodlib experiment {name.removesuffix('_quick').removesuffix('_custom')}` first")
    return json.loads(path.read_text())
