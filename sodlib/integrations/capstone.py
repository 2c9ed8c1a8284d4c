"""The capstone (``python -m sodlib experiment capstone --seed S``): every remedy of the course on one benchmark,
each with whole-image and sliced inference; ``experiment capstone_tiny --seed S`` is the same on the embedded
tiny-object data (:data:`BENCHMARKS`: 640 px images, 320 px tiles at a 448 px input, native 640 px).

For one seed (the large-image benchmark's figures):

1. train the rows of engine experiment ``capstone_training`` (:mod:`sodlib.engine.experiments`: Faster R-CNN
   with an FPN, + derived anchors, + copy-paste, precise R-FCN, EFPN, the combination), all on tiles of the
   embedded large-image data; a finished training record of the same seed (``capstone_training_seedS.json``
   with every checkpoint in place) is used as it is, so that an interrupted capstone resumes at the inference;
2. run every trained detector on the validation images through SAHI (:mod:`sodlib.integrations.sahi`): the
   whole image at the detector's 512 px input (``full``), and sliced (``sliced``: 512 px tiles overlapping by
   20 %, plus the whole image, merged by greedy NMM on IoS 0.5, SAHI's defaults); the baseline also on the
   whole image at its native 1600 px (``native``), the other way to give small objects more pixels;
3. for each row: COCO AP, AP_S, AR_S and AP / AR of the tiny bin (area < 16^2), the error decomposition per
   size bin (:func:`sodlib.eval.error_decomposition`), ms per image (reading, slicing, detection, merging; one
   thread) and the peak memory of one image's inference (:func:`sodlib.bench.memory.peak_resident_growth_mb`,
   in a fresh process).

Writes ``notebooks/results/capstone_seedS.json`` (``capstone_tiny_seedS.json``) after every row (``"complete": false`` until the last one)::

    {"name", "seed", "slicing", "training": {run: {"iterations", "train_seconds"}}, "hardware", "complete",
     "rows": {row: {"run", "inference", "metrics", "errors", "ms_per_image", "tiles_per_image", "peak_memory_mb",
                    "detections"}},
     "pictures": {"image_id", "file_name", "min_score", "rows": {row: [[x1, y1, x2, y2, score, category_id]]}}}

(the pictures: the detections of :data:`PICTURE_ROWS` on the first validation image, scoring at least 0.1).
"""
from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from sodlib.data.coco import load_coco
from sodlib.data.paths import CHECKOUT_DIR
from sodlib.data.synthetic import embedded_files
from sodlib.engine.experiments import EXPERIMENTS, configs_dir, default_results_dir, run_experiment
from sodlib.engine.runs import hardware_description, load_run_config
from sodlib.eval import error_decomposition, evaluate_results
from sodlib.integrations.sahi import SliceSettings, check_images_fit, detection_model_from_checkpoint, predict_images

__all__ = ["Benchmark", "BENCHMARKS", "INFERENCE_MODES", "SIZE_BINS", "PICTURE_ROWS", "inference_rows",
           "run_capstone", "measure_peak_memory", "picture_detections"]


@dataclass(frozen=True)
class Benchmark:
    """One capstone table: its record's ``name`` (``NAME_seedS.json``), the engine experiment that trains its
    rows, its sliced inference and the images' own size (the ``native`` row's input)."""

    name: str
    training_experiment: str
    slicing: SliceSettings
    native_size: int


BENCHMARKS = {
    "capstone": Benchmark("capstone", "capstone_training", SliceSettings(size=512, overlap=0.2), 1600),
    "capstone_tiny": Benchmark("capstone_tiny", "capstone_tiny_training", SliceSettings(size=320, overlap=0.2), 640),
}
"""The large-image benchmark (1600 px, 512 px tiles shown at 1x, the whole image at 0.32x) and the tiny-object one
(640 px, 320 px tiles shown at 1.4x, the whole image at 0.7x)."""
SIZE_BINS = {"tiny": (0.0, 256.0)}
INFERENCE_MODES = ("full", "sliced", "native")
"""``full``: the whole image at the detector's input size; ``sliced``: SAHI's tiles and merge; ``native``: the whole
image at its own size (:attr:`Benchmark.native_size`)."""
PICTURE_ROWS = ("baseline", "baseline_sliced", "combined_sliced")
"""Rows whose detections on the first validation image the record keeps, for the notebook's picture."""
PICTURE_MIN_SCORE = 0.1
_NOT_DETECTORS = ("efpn_stage2",)  # a stage whose weights the next stage finishes; its detector is the baseline's


def inference_rows(runs: list[str]) -> dict[str, tuple[str, str]]:
    """Row name -> (trained run, inference mode): every detector whole and sliced, the baseline also native."""
    rows: dict[str, tuple[str, str]] = {}
    for run in runs:
        if run in _NOT_DETECTORS:
            continue
        rows[run] = (run, "full")
        rows[f"{run}_sliced"] = (run, "sliced")
        if run == "baseline":
            rows["baseline_native"] = (run, "native")
    return rows


def _model_options(mode: str, native_size: int) -> dict[str, Any]:
    return {"min_size": native_size, "max_size": native_size} if mode == "native" else {}


def measure_peak_memory(checkpoint: str | os.PathLike, image: str | os.PathLike, mode: str,
                        slicing: SliceSettings, native_size: int) -> float:
    """Peak resident MB of one image's inference in ``mode``, measured in a fresh process (one thread)."""
    code = ("import json; from sodlib.integrations.capstone import _peak_memory_here; "
            f"print(json.dumps(_peak_memory_here({str(checkpoint)!r}, {str(image)!r}, {mode!r}, "
            f"{asdict(slicing)!r}, {int(native_size)!r})))")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"measuring the peak memory of {checkpoint} ({mode}) failed:\n{out.stderr[-2000:]}")
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def _peak_memory_here(checkpoint: str, image: str, mode: str, slicing: dict, native_size: int) -> float:
    from sodlib.bench.memory import peak_resident_growth_mb
    from sodlib.integrations.sahi import predict_image

    torch.set_num_threads(1)
    detection_model = detection_model_from_checkpoint(checkpoint, model_options=_model_options(mode, native_size),
                                                      device="cpu")
    settings = SliceSettings(**slicing) if mode == "sliced" else None
    return round(peak_resident_growth_mb(lambda: predict_image(detection_model, image, settings)), 1)


def picture_detections(results: list[dict], image_id: int, min_score: float = PICTURE_MIN_SCORE) -> list[list[float]]:
    """``[[x1, y1, x2, y2, score, category_id]]`` of one image's COCO results scoring at least ``min_score``."""
    return [[*record["bbox"][:2], record["bbox"][0] + record["bbox"][2], record["bbox"][1] + record["bbox"][3],
             record["score"], record["category_id"]]
            for record in results if record["image_id"] == image_id and record["score"] >= min_score]


def _val_images(coco_gt, image_folder: Path) -> list[tuple[int, Path]]:
    return [(image["id"], image_folder / image["file_name"]) for image in
            sorted(coco_gt.dataset["images"], key=lambda image: image["id"])]


def _training(experiment: str, seed: int, quick: bool, results_dir: Path, runs_root: Path | None,
              command: str | None) -> dict:
    """The training record of this seed: reused when complete with every checkpoint in place, else trained."""
    tag = f"{experiment}_seed{seed}" + ("_quick" if quick else "")
    path = results_dir / f"{tag}.json"
    root = runs_root if runs_root is not None else CHECKOUT_DIR / "runs" / "experiments"
    if path.is_file():
        record = json.loads(path.read_text())
        checkpoints = [root / tag / run / "checkpoints" / "last.pt" for run in EXPERIMENTS[experiment].runs]
        if record.get("complete") and all(checkpoint.is_file() for checkpoint in checkpoints):
            record["path"] = str(path)
            return {**record, "run_dirs": {run: str(root / tag / run) for run in record["runs"]}}
    record = run_experiment(experiment, quick=quick, results_dir=results_dir, runs_root=runs_root,
                            command=command, seed=seed)
    return {**record, "run_dirs": {run: str(root / tag / run) for run in record["runs"]}}


def run_capstone(seed: int = 0, *, benchmark: str = "capstone", quick: bool = False,
                 slicing: SliceSettings | None = None, results_dir: str | os.PathLike | None = None,
                 runs_root: str | os.PathLike | None = None, command: str | None = None,
                 measure_memory: bool = True) -> dict[str, Any]:
    """Train (or reuse) the detectors of ``benchmark`` (a key of :data:`BENCHMARKS`) for ``seed`` and evaluate
    every row (module docstring); writes and returns the record (with its ``path``). ``slicing`` replaces the
    benchmark's sliced inference. ``quick`` trains a few steps and evaluates three images (the pipeline's check;
    its numbers mean nothing) and writes ``NAME_seedS_quick.json``."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed={seed!r} must be a non-negative integer")
    if benchmark not in BENCHMARKS:
        raise ValueError(f"benchmark={benchmark!r}: use one of {', '.join(BENCHMARKS)}")
    bench = BENCHMARKS[benchmark]
    slicing = slicing if slicing is not None else bench.slicing
    out = Path(results_dir) if results_dir is not None else default_results_dir()
    baseline_config = load_run_config(configs_dir() / EXPERIMENTS[bench.training_experiment].runs["baseline"])
    dataset, split = baseline_config["data"]["val"].split(":")  # "embedded_large:val"
    annotations, image_folder = embedded_files(dataset, split)
    coco_gt = load_coco(annotations)
    images = _val_images(coco_gt, Path(image_folder))
    if quick:
        images = images[:3]
    check_images_fit(images, slicing)  # a tile larger than an image is refused before any training
    started, started_utc = time.perf_counter(), datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    training = _training(bench.training_experiment, seed, quick, out,
                         Path(runs_root) if runs_root is not None else None, command)
    tag = f"{bench.name}_seed{seed}" + ("_quick" if quick else "")
    path = out / f"{tag}.json"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows: dict[str, Any] = {}
    pictures: dict[str, Any] = {"image_id": images[0][0], "file_name": Path(images[0][1]).name,
                                "min_score": PICTURE_MIN_SCORE, "rows": {}}
    planned = inference_rows(list(training["runs"]))
    try:
        for row, (run, mode) in planned.items():
            checkpoint = Path(training["run_dirs"][run]) / "checkpoints" / "last.pt"
            detection_model = detection_model_from_checkpoint(
                checkpoint, model_options=_model_options(mode, bench.native_size), device="cpu")
            timings: dict[str, float] = {}
            results = predict_images(detection_model, images, slicing if mode == "sliced" else None,
                                     progress=False, timings=timings)
            image_ids = [image_id for image_id, _ in images]
            if row in PICTURE_ROWS:
                pictures["rows"][row] = picture_detections(results, images[0][0])
            rows[row] = {"run": run, "inference": mode,
                         "metrics": evaluate_results(coco_gt, results, size_bins=SIZE_BINS, image_ids=image_ids),
                         "errors": error_decomposition(coco_gt, results, size_bins=SIZE_BINS, image_ids=image_ids),
                         "detections": len(results), **timings,
                         "peak_memory_mb": (measure_peak_memory(checkpoint, images[0][1], mode, slicing,
                                                                bench.native_size) if measure_memory else None)}
            record = {"name": bench.name, "seed": seed, "quick": quick, "command": command,
                      "slicing": asdict(slicing), "native_size": bench.native_size, "size_bins": SIZE_BINS, "images": len(images),
                      "training_record": Path(training["path"]).name,  # beside this file
                      "training": {run: {k: summary.get(k) for k in ("iterations", "train_seconds", "metrics")}
                                   for run, summary in training["runs"].items()},
                      "hardware": hardware_description(), "started_utc": started_utc,
                      "duration_s": round(time.perf_counter() - started, 1),
                      "complete": len(rows) == len(planned), "rows": dict(rows),
                      "pictures": pictures}
            temporary = path.with_suffix(".json.tmp")
            temporary.write_text(json.dumps(record, indent=2))
            temporary.replace(path)  # never a half-written file
    finally:
        torch.set_num_threads(threads)
    record["path"] = str(path)
    return record

