"""Run configurations (one file: ``[data]``, ``[model]``, ``[train]``, ``[evaluate]``) and run folders.

A run configuration file (TOML or JSON)::

    [data]                      # default: the embedded synthetic dataset
    train = "embedded:train"    # or train_annotations = "...json", train_images = "dir/"
    val = "embedded:val"        # or val_annotations / val_images; val = "none" to skip
    oversample = 3              # optional: each train image holding a small object appears 3 times (>= 1)
    copy_paste = { strategy = "all", count = 1, probability = 0.5 }   # optional: small-object copy-paste on
                                # the train split (any field of CopyPasteSettings too); the val split is never changed

    [model]                     # a detector of the registry (sodlib.models.list_models()) and its arguments
    name = "faster_rcnn"        # optional: faster_rcnn when absent; num_classes comes from the data
    backbone = "resnet_tiny"
    min_size = 384

    [train]                     # fields of sodlib.engine.TrainConfig
    iterations = 420

    [evaluate]
    size_bins = { tiny = [0, 256] }

A run folder (``runs/<name>`` by default) holds ``run_config.json`` (the whole configuration as run),
``config.json`` (the training part), ``checkpoints/``, ``history.json``, ``metrics.json``,
``detections_val.json`` (COCO results), ``figures/`` (loss curves, PR curves per size bin, error pictures)
and ``summary.json`` (command, seeds, hardware, duration).
"""
from __future__ import annotations

import copy
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import torch

from sodlib.checks import refuse_unknown_names
from sodlib.data.dataset import CocoDetection
from sodlib.data.files import check_output_apart_from_inputs
from sodlib.engine.config import TrainConfig, read_config_file

__all__ = ["load_run_config", "apply_overrides", "model_name", "build_run_model", "datasets_from_config", "data_paths",
           "check_run_dir", "run_training", "evaluate_trained_run", "hardware_description", "write_error_figures"]

SECTIONS = ("data", "model", "train", "evaluate")


def load_run_config(path: str | os.PathLike) -> dict[str, Any]:
    """A run configuration from a file, with its sections checked (unknown sections are refused)."""
    config = read_config_file(path)
    return check_run_config(config, str(path))


def check_run_config(config: Mapping[str, Any], source: str = "config") -> dict[str, Any]:
    """A copy of ``config`` with its four sections present and checked (``source`` names it in errors)."""
    config = copy.deepcopy(dict(config))
    refuse_unknown_names(config, SECTIONS, source, what="section")
    for section in SECTIONS:
        config.setdefault(section, {})
        if not isinstance(config[section], dict):
            raise ValueError(f"{source}: [{section}] must be a table of settings")
    if "num_classes" in config["model"]:
        raise ValueError(f"{source}: [model] num_classes comes from the data; remove it")
    model_name(config, source)  # an unknown name or option is refused here, listing the known ones
    refuse_unknown_names(config["data"], DATA_KEYS, f"{source}: [data]")
    for key in ("run_dir", "resume"):
        if key in config["train"]:
            raise ValueError(f"{source}: [train] {key} is set by the command (--run-dir, --resume), not in the file; remove it")
    TrainConfig.from_mapping({**config["train"], "run_dir": "<run folder>"})  # validates before any work starts
    check_augmentation(config["data"])
    refuse_unknown_names(config["evaluate"], ("size_bins", "batch_size", "f1_score_threshold"), f"{source}: [evaluate]")
    if config["evaluate"].get("f1_score_threshold") is not None:
        from sodlib.eval.threshold_metrics import check_score_threshold

        check_score_threshold(config["evaluate"]["f1_score_threshold"], f"{source}: [evaluate] f1_score_threshold")
    return config


def model_name(config: Mapping[str, Any], source: str = "config") -> str:
    """The registered detector a run configuration trains: ``[model] name``, :data:`~sodlib.models.DEFAULT_MODEL`
    when absent."""
    from sodlib.models import DEFAULT_MODEL, check_model_options, model_builder

    name = config.get("model", {}).get("name", DEFAULT_MODEL)
    if not isinstance(name, str):
        raise ValueError(f"{source}: [model] name={name!r} must be a string such as \"{DEFAULT_MODEL}\"")
    try:
        model_builder(name)
    except ValueError as error:
        raise ValueError(f"{source}: [model] {error}") from None
    check_model_options(name, [k for k in config.get("model", {}) if k not in RUN_MODEL_KEYS], source=f"{source}: [model]")
    init_from = config.get("model", {}).get("init_from")
    if init_from is not None and (not isinstance(init_from, str) or not init_from):
        raise ValueError(f"{source}: [model] init_from={init_from!r} must be the path of a checkpoint (.pt)")
    return name


#: ``[model]`` keys that are the run's, not the detector's: its registered name, and the checkpoint whose weights it
#: starts from (a staged schedule: EFPN's stage 2 starts from the FPN baseline, stage 3 from stage 2).
RUN_MODEL_KEYS = ("name", "init_from")


def build_run_model(config: Mapping[str, Any], num_classes: int) -> torch.nn.Module:
    """The detector of a run configuration's ``[model]`` table, for ``num_classes`` (categories + 1), from the
    model registry; with ``init_from``, the weights of that checkpoint loaded into it (a model with a
    ``load_baseline(state_dict)`` method, such as EFPN, takes the weights of the run it extends; any other loads
    them strictly)."""
    from sodlib.engine.checkpoint import load_checkpoint
    from sodlib.models import build_model

    model_options = config.get("model", {})
    options = {k: v for k, v in model_options.items() if k not in RUN_MODEL_KEYS}
    init_from = model_options.get("init_from")
    if isinstance(init_from, str) and init_from.startswith("run:"):
        raise ValueError(f"[model] init_from={init_from!r} names a run of an experiment, which only `python -m sodlib "
                         "experiment` resolves; fix: give the path of that run's checkpoints/last.pt")
    if init_from is not None and not Path(init_from).is_file():
        raise FileNotFoundError(f"[model] init_from={init_from!r} does not exist; fix: train that run first, or "
                                "point init_from at its checkpoints/last.pt")
    model = build_model(model_name(config), num_classes=num_classes, **options)
    if init_from is not None:
        state = load_checkpoint(Path(init_from))["model"]
        loader = getattr(model, "load_baseline", None)
        try:
            loader(state) if loader is not None else model.load_state_dict(state)
        except (RuntimeError, ValueError) as error:
            raise ValueError(f"[model] init_from={init_from!r}: {error}") from None
    return model


def apply_overrides(config: Mapping[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``["train.lr=0.01", "model.min_size=256"]`` applied to a copy (values parsed as JSON, else strings)."""
    config = copy.deepcopy(dict(config))
    for override in overrides:
        key, sep, raw = override.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or section not in SECTIONS or not name:
            raise ValueError(f"--set {override!r}: use SECTION.KEY=VALUE with SECTION one of {', '.join(SECTIONS)}, e.g. train.lr=0.01")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        config.setdefault(section, {})[name] = value
    return check_run_config(config, "--set")


DATA_KEYS = ("train", "val", "train_annotations", "train_images", "val_annotations", "val_images", "oversample",
             "copy_paste", "tiles")


def check_augmentation(data: Mapping[str, Any]) -> None:
    """Refuse bad ``oversample`` / ``copy_paste`` values of a ``[data]`` table with a message that says the fix."""
    if "oversample" in data:
        factor = data["oversample"]
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor >= 1:
            raise ValueError(f"[data] oversample={factor!r} must be a number >= 1 (1: no oversampling; the paper "
                             "used 2, 3, 4)")
    if "copy_paste" in data:
        settings = data["copy_paste"]
        if not isinstance(settings, dict):
            raise ValueError(f"[data] copy_paste={settings!r} must be a table, e.g. "
                             "copy_paste = { strategy = \"all\", count = 1, probability = 0.5 }")
        from sodlib.augment import SmallObjectCopyPaste
        from sodlib.augment.copy_paste import SETTING_NAMES

        known = ("probability", *SETTING_NAMES)  # the transform's own seed and masks are the run's to set
        refuse_unknown_names(settings, known, "[data] copy_paste")

        try:  # the transform checks its own arguments
            SmallObjectCopyPaste(**settings, return_masks=False, seed=0)
        except (ValueError, TypeError) as error:
            raise ValueError(f"[data] copy_paste: {error}") from None
    if "tiles" in data:
        tile_settings(data)
        if data.get("oversample", 1) != 1:
            raise ValueError("[data] tiles and oversample do not go together (oversampling repeats whole images); "
                             "fix: drop one of them")


def tile_settings(data: Mapping[str, Any]):
    """The :class:`sodlib.data.tiles.TileSettings` of ``[data] tiles`` (a table: ``size``, ``overlap``,
    ``full_image``, ``min_area_ratio``), refused with the fix when malformed."""
    from sodlib.data.tiles import TileSettings

    settings = data["tiles"]
    if not isinstance(settings, dict):
        raise ValueError(f"[data] tiles={settings!r} must be a table, e.g. "
                         "tiles = { size = 512, overlap = 0.2, full_image = true }")
    refuse_unknown_names(settings, ("size", "overlap", "full_image", "min_area_ratio"), "[data] tiles")
    try:
        return TileSettings(**settings)
    except ValueError as error:
        raise ValueError(f"[data] tiles: {error}") from None


#: The embedded data sources a ``[data]`` split may name: ``"<dataset>:<split>"``.
EMBEDDED_SOURCES = tuple(f"{dataset}:{split}" for dataset in ("embedded", "embedded_tiny", "embedded_large")
                         for split in ("train", "val"))


def _split_source(data: Mapping[str, Any], split: str) -> tuple[Any, Any] | str | None:
    """Where a ``[data]`` split comes from: ``(annotations, images)`` given in the table, one of the
    :data:`EMBEDDED_SOURCES` (``"embedded:train"``, ``"embedded_tiny:val"``, ...), or ``None`` for ``"none"``."""
    annotations, images = data.get(f"{split}_annotations"), data.get(f"{split}_images")
    if annotations is not None or images is not None:
        if annotations is None or images is None:
            raise ValueError(f"[data] needs both {split}_annotations and {split}_images (or neither)")
        return annotations, images
    source = data.get(split, f"embedded:{split}")
    if source == "none":
        return None
    if source not in EMBEDDED_SOURCES:
        named = ", ".join(repr(s) for s in EMBEDDED_SOURCES)
        raise ValueError(f"[data] {split}={source!r}: use one of {named}, 'none', "
                         f"or give {split}_annotations and {split}_images")
    return source


def _embedded_files(source: str, generate: bool) -> tuple[Path, Path]:
    """``(annotation json, image folder)`` of an embedded source, generated first when ``generate`` is true."""
    from sodlib.data.synthetic import embedded_files

    dataset, split = source.split(":", 1)
    return embedded_files(dataset, split, generate)


def _dataset(data: Mapping[str, Any], split: str, **options: Any) -> CocoDetection | None:
    source = _split_source(data, split)
    if source is None:
        return None
    return CocoDetection(*(_embedded_files(source, generate=True) if isinstance(source, str) else source), **options)


def data_paths(config: Mapping[str, Any]) -> list[Path]:
    """The files a run configuration reads: each split's annotation json and image folder (where the embedded
    dataset lives for ``embedded:...`` and ``embedded_tiny:...``, without generating it)."""
    paths: list[Path] = []
    for split in ("train", "val"):
        source = _split_source(config.get("data", {}), split)
        if source is not None:
            paths += [Path(p) for p in (_embedded_files(source, generate=False) if isinstance(source, str) else source)]
    return paths


def check_run_dir(config: Mapping[str, Any], run_dir: str | os.PathLike, what: str = "the run folder (--run-dir)") -> None:
    """Refuse a run folder that is, lies inside or holds a file the configuration reads (:func:`data_paths`)."""
    check_output_apart_from_inputs(run_dir, data_paths(config), what=what)


def datasets_from_config(config: Mapping[str, Any]) -> tuple[Any, CocoDetection | None]:
    """The training and validation datasets of a run configuration's ``[data]`` table.

    ``oversample`` and ``copy_paste`` change the training split only: the train set is read with its masks and
    ``SmallObjectCopyPaste(**copy_paste, return_masks=False, seed=<[train] seed>)`` as its transform (its own
    stream, so the model's initialisation and the data order draw what they drew without it), then wrapped in
    ``OversampledDataset(train, oversample, seed=<[train] seed>)``. ``tiles`` cuts the training images into
    tiles first (:class:`sodlib.data.tiles.TiledDataset`; copy-paste then pastes into each tile). Crowd regions
    are still flagged by ``iscrowd`` and left out by the training loop."""
    data = config.get("data", {})
    refuse_unknown_names(data, DATA_KEYS, "[data]")
    check_augmentation(data)
    seed = int(config.get("train", {}).get("seed", 0))
    options: dict[str, Any] = {}
    if "copy_paste" in data:
        from sodlib.augment import SmallObjectCopyPaste

        options = {"masks": True, "transforms": SmallObjectCopyPaste(**data["copy_paste"], return_masks=False, seed=seed)}
    if "tiles" in data:  # cut first, then paste into the tiles
        from sodlib.data.tiles import TiledDataset

        source = _dataset(data, "train")
        train_set = None if source is None else TiledDataset(source, tile_settings(data), masks="masks" in options,
                                                              transforms=options.get("transforms"))
    else:
        train_set = _dataset(data, "train", **options)
    if train_set is None:
        raise ValueError("[data] train='none': a training run needs training data")
    if "oversample" in data and data["oversample"] != 1:
        from sodlib.augment import OversampledDataset

        oversampled = OversampledDataset(train_set, data["oversample"], seed=seed)
        oversampled.num_classes = train_set.num_classes
        train_set = oversampled
    return train_set, _dataset(data, "val")


def hardware_description() -> dict[str, Any]:
    """Where a run ran: CPU / GPU, thread count, load, versions."""
    description = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                   "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": sys.version.split()[0],
                   "torch": torch.__version__, "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    try:
        import torchvision

        description["torchvision"] = torchvision.__version__
        description["load_average"] = [round(v, 2) for v in os.getloadavg()]
    except (ImportError, OSError):
        pass
    return description


def write_error_figures(model: torch.nn.Module, dataset: CocoDetection, results: list[dict], figures_dir: Path,
                        size_bins: Mapping[str, tuple[float, float]] | None = None, examples: int = 2) -> list[Path]:
    """PR curves per size bin (from the COCO results) and the TP / FP / miss pictures of the ``examples`` images
    that hold the most objects."""
    import matplotlib.pyplot as plt

    from sodlib.eval import match_image, precision_recall_by_bin, predict_one, run_cocoeval
    from sodlib.viz.detection import plot_detection_errors, plot_pr_curves

    figures_dir.mkdir(parents=True, exist_ok=True)
    written = []
    cocoeval = run_cocoeval(dataset.coco, results, size_bins=size_bins, image_ids=dataset.image_ids)
    for iou in (0.5, 0.75):
        curves = precision_recall_by_bin(cocoeval, iou=iou, bins=("all", "small", "medium", "large"))
        figure = plot_pr_curves(curves, iou=iou)
        path = figures_dir / f"pr_curves_iou{int(iou * 100)}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(path)
    # the images with the most objects show the most of what goes right and wrong
    busiest = sorted(range(len(dataset)), key=lambda i: (-len(dataset.annotations_of(i)), i))[:examples]
    for index in busiest:
        image, target = dataset[index]
        prediction = predict_one(model, image)
        errors = match_image(prediction, target)
        figure = plot_detection_errors(image, target, prediction, errors, category_names=dataset.category_names,
                                       title=f"image {target['image_id']}")
        path = figures_dir / f"errors_image{target['image_id']}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(path)
    return written


def run_training(config: Mapping[str, Any], run_dir: str | os.PathLike, *, resume: bool = False,
                 command: str | None = None) -> dict[str, Any]:
    """Train and evaluate one run configuration into ``run_dir``; returns the summary also written to
    ``summary.json`` (metrics, training seconds, seeds, hardware, command). Under ``torchrun`` every process
    calls this; rank 0 writes the files. A ``run_dir`` that is, lies inside or holds one of the data files is
    refused first (:func:`check_run_dir`)."""
    config = check_run_config(config)
    run_dir = Path(run_dir)
    check_run_dir(config, run_dir)
    train_set, val_set = datasets_from_config(config)
    train_values = dict(config["train"], run_dir=str(run_dir))
    if resume:
        train_values["resume"] = True
    size_bins = config["evaluate"].get("size_bins", {})
    train_values.setdefault("size_bins", size_bins)
    if "batch_size" in config["evaluate"]:
        train_values["eval_batch_size"] = config["evaluate"]["batch_size"]
    if "f1_score_threshold" in config["evaluate"]:
        train_values["f1_score_threshold"] = config["evaluate"]["f1_score_threshold"]
    train_config = TrainConfig.from_mapping(train_values)
    threads = torch.get_num_threads()
    if train_config.num_threads is not None:
        torch.set_num_threads(train_config.num_threads)  # for evaluation and figures too; restored at the end
    try:
        return _train_and_report(config, run_dir, train_set, val_set, train_config, size_bins, command)
    finally:
        torch.set_num_threads(threads)


def _train_and_report(config: dict[str, Any], run_dir: Path, train_set: CocoDetection, val_set: CocoDetection | None,
                      train_config: TrainConfig, size_bins: Mapping[str, tuple[float, float]], command: str | None) -> dict[str, Any]:
    from sodlib.engine.train import train

    torch.manual_seed(train_config.seed)  # the model's initialisation
    model = build_run_model(config, train_set.num_classes)
    started = time.perf_counter()
    result = train(model, train_set, val_set, train_config)
    if int(os.environ.get("RANK", "0")) != 0:
        return {}
    summary = {"command": command, "config": config, "seed": train_config.seed, "iterations": result.iterations,
               "train_seconds": round(result.seconds, 1), "total_seconds": round(time.perf_counter() - started, 1),
               "hardware": hardware_description(), "metrics": result.metrics, "ms_per_image": result.ms_per_image,
               "world_size": int(os.environ.get("WORLD_SIZE", "1")), "final_losses": _final_losses(result.history)}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run_config.json").write_text(json.dumps(config, indent=2))
    if val_set is not None and (run_dir / "detections_val.json").is_file():
        results = json.loads((run_dir / "detections_val.json").read_text())
        write_error_figures(model, val_set, results, run_dir / "figures", size_bins or None)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def evaluate_trained_run(config: Mapping[str, Any], run_dir: str | os.PathLike,
                         test_options: Mapping[str, Any]) -> dict[str, Any]:
    """The final weights of a finished run (``run_dir/checkpoints/last.pt``) evaluated again on the configuration's
    validation split with some of the model's test-time options changed (``{"refine_steps": 5}``), in the run's
    thread setting: ``{"metrics", "ms_per_image", "test_options", "hardware"}``.

    The same weights with and without a test-time step (box refinement, another NMS) isolate what that step
    does; a model option that changes the weights' shapes is refused by ``load_state_dict``."""
    from sodlib.engine.checkpoint import load_checkpoint
    from sodlib.eval.evaluate import evaluate
    from sodlib.models import rebuild_model

    config = check_run_config(config)
    checkpoint_path = Path(run_dir) / "checkpoints" / "last.pt"
    if not checkpoint_path.is_file():
        raise FileNotFoundError(f"{checkpoint_path} does not exist; fix: train the run first")
    _, val_set = datasets_from_config(config)
    if val_set is None:
        raise ValueError("[data] val='none': evaluating a run needs a validation split")
    checkpoint = load_checkpoint(checkpoint_path)
    model = rebuild_model({**checkpoint["model_config"], **test_options})
    model.load_state_dict(checkpoint["model"])
    threads = torch.get_num_threads()
    if config["train"].get("num_threads") is not None:
        torch.set_num_threads(int(config["train"]["num_threads"]))
    try:
        timings: dict[str, float] = {}
        metrics = evaluate(model, val_set, config["evaluate"].get("size_bins") or None,
                           batch_size=int(config["evaluate"].get("batch_size", 4)), timings=timings,
                           f1_score_threshold=config["evaluate"].get("f1_score_threshold"))
        return {"metrics": metrics, "ms_per_image": timings["ms_per_image"], "test_options": dict(test_options),
                "hardware": hardware_description()}
    finally:
        torch.set_num_threads(threads)


def _final_losses(history: list[dict[str, Any]], window: int = 20) -> dict[str, float]:
    tail = history[-window:]
    keys = [k for k in (tail[0] if tail else {}) if k.startswith("loss")]
    return {k: round(sum(row[k] for row in tail) / len(tail), 4) for k in keys}
