"""What distillation does to EFPN's features, read from the trained runs of ``experiment efpn``:
``python -m sodlib experiment efpn_features --seed S`` (after ``experiment efpn --seed S``).

For every stage-2 run of that seed (FTT, nearest, the ESPCN rows, the lambdas) and the validation images of the
tiny-object data it computes, against the teacher (the same frozen FPN on the 2x input):

- the mean absolute feature error of ``P'2`` and of ``P'3`` on the cells that ground-truth boxes cover and on the
  rest (:func:`sodlib.models.losses.feature_error_by_region`, summed over images, weighted by cells), the direct
  evidence of what the balanced loss changes (the paper argues it from F1 alone);
- for a few small objects, the pictures of the paper's Fig. 6: the channel norm ``||F_xy||_2`` of the teacher's
  ``P2``, of ESPCN's and FTT's ``P'2`` (and FPN's own ``P2`` at half their resolution) in a window around the
  object, with the image window.

It writes ``notebooks/results/efpn_features_seedS.json``.
"""
from __future__ import annotations

import datetime
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from sodlib.data import CocoDetection
from sodlib.data.paths import CHECKOUT_DIR
from sodlib.data.synthetic import embedded_tiny_dataset
from sodlib.engine.checkpoint import load_checkpoint
from sodlib.engine.experiments import default_results_dir
from sodlib.engine.runs import hardware_description

__all__ = ["FEATURE_RUNS", "PICTURE_RUNS", "analyse_efpn_features"]

#: The stage-2 rows of ``experiment efpn`` whose features are compared with the teacher's.
FEATURE_RUNS = ("efpn_stage2", "efpn_nearest_stage2", "espcn_detection", "espcn_global", "espcn_fbb", "espcn_fbb_p3",
                "efpn_stage2_lambda0.5", "efpn_stage2_lambda1.5")
#: Fig. 6's columns: the paper's "SISR" (ESPCN) and "FTT" rows, both distilled with the balanced loss on P'2 and P'3.
PICTURE_RUNS = {"ESPCN P'2": "espcn_fbb_p3", "FTT P'2": "efpn_stage2"}
WINDOW = 32  # pixels of the resized image around an object (16 cells of P'2)


def _load(run_dir: Path):
    from sodlib.models import rebuild_model

    checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    model = rebuild_model(checkpoint["model_config"])
    model.load_state_dict(checkpoint["model"])
    return model.eval()


def _energy(feature: torch.Tensor, top: int, left: int, cells: int) -> list[list[float]]:
    """``||F[:, y, x]||_2`` over a ``cells x cells`` window starting at ``(top, left)`` (zero outside the map)."""
    norm = feature.norm(dim=0)
    window = torch.zeros(cells, cells)
    rows = slice(max(top, 0), min(top + cells, norm.shape[0]))
    cols = slice(max(left, 0), min(left + cells, norm.shape[1]))
    window[rows.start - top:rows.stop - top, cols.start - left:cols.stop - left] = norm[rows, cols]
    return [[round(float(v), 4) for v in row] for row in window]


def _small_objects(dataset: CocoDetection, threshold: float, count: int, min_size: int) -> list[tuple[int, list[float]]]:
    """``(index, box xyxy in image pixels)`` of the first object of each image, until ``count``, whose side in the
    resized image (short side ``min_size``) lies between 4 px and ``threshold``, a window away from the border."""
    picked = []
    for index in range(len(dataset)):
        image, target = dataset[index]
        scale = min_size / min(image.shape[-2:])
        sides = torch.sqrt((target["boxes"][:, 2:] - target["boxes"][:, :2]).prod(dim=1)) * scale
        limits = (image.shape[-1] * scale - WINDOW, image.shape[-2] * scale - WINDOW)
        for box, side in zip(target["boxes"].tolist(), sides.tolist()):
            centre = [(box[0] + box[2]) / 2 * scale, (box[1] + box[3]) / 2 * scale]
            if 4.0 <= side < threshold and all(WINDOW < c < limit for c, limit in zip(centre, limits)):
                picked.append((index, box))
                break
        if len(picked) == count:
            break
    return picked


def analyse_efpn_features(seed: int, *, images: int = 50, pictures: int = 4, results_dir: str | os.PathLike | None = None,
                          runs_root: str | os.PathLike | None = None, command: str | None = None) -> dict[str, Any]:
    """Feature errors and Fig. 6 pictures of seed ``seed``'s stage-2 runs (module docstring); returns the record."""
    from sodlib.models.efpn import extension_maps
    from sodlib.models.losses import feature_error_by_region

    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed={seed!r} must be a non-negative integer")
    folder = (Path(runs_root) if runs_root is not None else CHECKOUT_DIR / "runs" / "experiments") / f"efpn_seed{seed}"
    missing = [run for run in FEATURE_RUNS if not (folder / run / "checkpoints" / "last.pt").is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} lacks the trained runs {', '.join(missing)}; fix: run "
                                f"`python -m sodlib experiment efpn --seed {seed}` first")
    started = time.perf_counter()
    dataset = CocoDetection(*embedded_tiny_dataset("val"))
    count = min(images, len(dataset))
    record: dict[str, Any] = {"name": "efpn_features", "seed": seed, "images": count, "command": command,
                              "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                              "runs": {}}
    torch.set_num_threads(1)
    maps_for_pictures: dict[str, list[dict[str, torch.Tensor]]] = {}
    for run in FEATURE_RUNS:
        model = _load(folder / run)
        sums = {level: {"object": 0.0, "background": 0.0, "object_cells": 0, "background_cells": 0} for level in ("p2", "p3")}
        for index in range(count):
            image, target = dataset[index]
            maps = extension_maps(model, image)
            boxes = [target["boxes"][target["iscrowd"] == 0] * maps["scale"]]
            for level, stride in (("p2", 2.0), ("p3", 4.0)):
                error = feature_error_by_region(maps[f"{level}_extended"][None], maps[f"teacher_{level}"][None], boxes, stride=stride)
                for region in ("object", "background"):
                    if error[f"{region}_cells"]:
                        sums[level][region] += error[region] * error[f"{region}_cells"]
                        sums[level][f"{region}_cells"] += error[f"{region}_cells"]
        record["runs"][run] = {level: {"object": s["object"] / max(s["object_cells"], 1),
                                       "background": s["background"] / max(s["background_cells"], 1),
                                       "object_cells": s["object_cells"], "background_cells": s["background_cells"]}
                               for level, s in sums.items()}
        if run in PICTURE_RUNS.values():
            chosen = _small_objects(dataset, model.roi_heads.threshold, pictures, model.transform.min_size[0])
            maps_for_pictures[run] = [{**extension_maps(model, dataset[index][0]), "box": box, "index": index}
                                      for index, box in chosen]
    record["pictures"] = _pictures(dataset, maps_for_pictures)
    record["hardware"] = hardware_description()
    record["duration_s"] = round(time.perf_counter() - started, 1)
    out = Path(results_dir) if results_dir is not None else default_results_dir()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"efpn_features_seed{seed}.json"
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(record))
    temporary.replace(path)
    record["path"] = str(path)
    return record


def _pictures(dataset: CocoDetection, maps: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Fig. 6's windows: per object the image window (uint8 lists), the box in window pixels and the energy of
    the teacher's P2, FPN's P2 and each picture run's P'2."""
    import torch.nn.functional as F

    first = next(iter(maps.values()), [])
    pictures = []
    for n, item in enumerate(first):
        scale = float(item["scale"])
        box = [v * scale for v in item["box"]]
        centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        left, top = int(round(centre[0] - WINDOW / 2)), int(round(centre[1] - WINDOW / 2))
        image = dataset[item["index"]][0]
        resized = F.interpolate(image[None], scale_factor=scale, mode="bilinear", align_corners=False, recompute_scale_factor=False)[0]
        window = (resized[:, top:top + WINDOW, left:left + WINDOW].clamp(0, 1) * 255).round().to(torch.uint8)
        entry = {"image_index": item["index"], "box": [box[0] - left, box[1] - top, box[2] - left, box[3] - top],
                 "image": window.permute(1, 2, 0).tolist(),
                 "teacher P2 (2x input)": _energy(item["teacher_p2"], top // 2, left // 2, WINDOW // 2),
                 "FPN P2 (1x)": _energy(item["p2"], top // 4, left // 4, WINDOW // 4)}
        for label, run in PICTURE_RUNS.items():
            entry[label] = _energy(maps[run][n]["p2_extended"], top // 2, left // 2, WINDOW // 2)
        pictures.append(entry)
    return pictures
