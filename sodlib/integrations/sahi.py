"""SAHI (Akyon et al., 2022, *Slicing Aided Hyper Inference*) over sodlib's detectors.

:class:`SodlibDetectionModel` is a SAHI ``DetectionModel``: any detector of the registry, or the checkpoint of a
run folder, runs under SAHI's ``get_prediction``, ``get_sliced_prediction`` and ``predict``, and SAHI's own merging
(NMS, NMM or greedy NMM, matched by IoU or by IoS) joins what the tiles found. The adapter gives SAHI the
detector's boxes, scores and COCO category ids as they are (``(x1, y1, x2, y2)`` in image pixels, the label mapped
through the checkpoint's categories); it keeps those scoring at least ``confidence_threshold``.

Sliced inference of one image (:func:`predict_image` with a :class:`SliceSettings`):

1. cut the image into tiles of ``size`` px overlapping by ``overlap`` (SAHI's grid, :func:`sodlib.data.tiles.tile_boxes`);
2. detect on every tile at the detector's own input size, and shift the boxes by the tile's corner;
3. with ``standard_prediction``, detect on the whole image too (resized by the detector, as without slicing);
4. merge: two detections of one class whose match (IoS ``|A n B| / min(|A|, |B|)``, or IoU) reaches
   ``match_threshold`` are one object: NMS keeps the higher-scored box, NMM and greedy NMM merge them into their
   enclosing box with the higher score.

IoS is the default match because a tile edge cuts objects: the part of an object a tile saw is a small box
inside the box its neighbour found, with a low IoU with it but an IoS near 1.

Requires ``sahi`` (``pip install sodlib[slicing]``); importing this module without it raises an ImportError that
says so.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

try:
    from sahi.models.base import DetectionModel
    from sahi.predict import get_prediction, get_sliced_prediction
    from sahi.prediction import ObjectPrediction
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError("sodlib.integrations.sahi needs the 'sahi' package; fix: pip install 'sodlib[slicing]' "
                      "(or pip install sahi)") from error

from sodlib.data.tiles import check_tiling, tile_count

logger = logging.getLogger(__name__)

__all__ = ["SodlibDetectionModel", "SliceSettings", "detection_model_from_checkpoint", "predict_image", "check_images_fit",
           "predict_images", "object_predictions_to_coco", "MERGE_TYPES", "MATCH_METRICS"]

MERGE_TYPES = ("GREEDYNMM", "NMM", "NMS")
MATCH_METRICS = ("IOS", "IOU")
DEFAULT_CONFIDENCE = 0.05
"""The score below which detections are dropped: torchvision's ``box_score_thresh``, so that AP sees the same
detections with and without SAHI."""


class SodlibDetectionModel(DetectionModel):
    """A sodlib detector as a SAHI ``DetectionModel``.

    Args:
        model: a detector of :mod:`sodlib.models` (torchvision's detection API: ``model([image])`` in eval mode
            returns ``[{"boxes" Tensor[D, 4], "labels" Tensor[D], "scores" Tensor[D]}]``).
        categories: ``[{"label", "id", "name"}]``, what the model's labels mean (a checkpoint's ``categories``);
            predictions carry the COCO ``id`` and ``name``.
        confidence_threshold: detections scoring below it are dropped.
        device: ``"cpu"``, ``"cuda"``, ... (default: SAHI's choice, the GPU when there is one).
    """

    def __init__(self, model: torch.nn.Module, categories: Sequence[Mapping[str, Any]], *,
                 confidence_threshold: float = DEFAULT_CONFIDENCE, device: str | None = None):
        if not isinstance(model, torch.nn.Module):
            raise ValueError(f"model={type(model).__name__} must be a torch detector (a sodlib.models detector)")
        if not categories:
            raise ValueError("categories is empty; fix: pass the checkpoint's 'categories' ([{label, id, name}])")
        self.label_to_category = {int(c["label"]): (int(c["id"]), str(c["name"])) for c in categories}
        super().__init__(model=model, device=device, confidence_threshold=confidence_threshold,
                         category_mapping={str(i): name for i, name in self.label_to_category.values()})

    def load_model(self) -> None:
        raise ValueError("SodlibDetectionModel is built from a model; fix: detection_model_from_checkpoint(path)")

    def set_model(self, model: Any, **kwargs: Any) -> None:
        model.eval()
        self.model = model.to(self.device)

    @property
    def num_categories(self) -> int:
        return len(self.label_to_category)

    @property
    def has_mask(self) -> bool:
        return False

    @property
    def category_names(self) -> list[str]:
        return [name for _, name in self.label_to_category.values()]

    def perform_inference(self, image: np.ndarray) -> None:
        """Run the detector on one ``uint8 [H, W, 3]`` RGB image (as SAHI hands it over); keeps the raw output."""
        tensor = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1).float().div_(255.0)
        with torch.inference_mode():
            self._original_predictions = self.model([tensor.to(self.device)])

    def _create_object_prediction_list_from_original_predictions(
            self, shift_amount_list: list[list[int | float]] | None = [[0, 0]],
            full_shape_list: list[list[int | float]] | None = None) -> None:
        # SAHI passes one image's [x, y] and [h, w] bare, and a batch's as lists of them
        shifts = shift_amount_list or [[0, 0]]
        shift = shifts if isinstance(shifts[0], (int, float)) else shifts[0]
        full_shape = full_shape_list
        if full_shape is not None and not isinstance(full_shape[0], (int, float)):
            full_shape = full_shape[0]
        per_image = []
        for output in self._original_predictions:
            scores = output["scores"].detach().cpu().numpy()
            keep = np.flatnonzero(scores >= self.confidence_threshold)
            boxes = output["boxes"].detach().cpu().numpy()[keep]
            labels = output["labels"].detach().cpu().numpy()[keep]
            predictions = []
            for box, label, score in zip(boxes, labels, scores[keep]):
                category_id, name = self.label_to_category[int(label)]
                predictions.append(ObjectPrediction(bbox=[float(v) for v in box], category_id=category_id,
                                                    category_name=name, score=float(score), shift_amount=list(shift),
                                                    full_shape=full_shape))
            per_image.append(predictions)
        self._object_prediction_list_per_image = per_image


def detection_model_from_checkpoint(path: str | os.PathLike, *, confidence_threshold: float = DEFAULT_CONFIDENCE,
                                    device: str | None = None,
                                    model_options: Mapping[str, Any] | None = None) -> SodlibDetectionModel:
    """The detector a checkpoint holds (``runs/NAME/checkpoints/last.pt``, or a run folder) as a
    :class:`SodlibDetectionModel`; ``model_options`` change test-time options (``{"min_size": 1600}``)."""
    from sodlib.engine.checkpoint import load_checkpoint
    from sodlib.models import rebuild_model

    path = Path(path)
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; fix: give a run folder or a checkpoint written by "
                                "`python -m sodlib train`")
    checkpoint = load_checkpoint(path)
    if checkpoint.get("model_config") is None or not checkpoint.get("categories"):
        raise ValueError(f"{path} does not record how its model was built or what its labels mean (model_config, "
                         "categories); fix: use a checkpoint written by `python -m sodlib train`")
    model = rebuild_model({**checkpoint["model_config"], **dict(model_options or {})})
    model.load_state_dict(checkpoint["model"])
    return SodlibDetectionModel(model, checkpoint["categories"], confidence_threshold=confidence_threshold,
                                device=device)


@dataclass(frozen=True)
class SliceSettings:
    """Sliced inference: tile side ``size`` (px), ``overlap`` (share of a tile), SAHI's merging (``merge`` one of
    :data:`MERGE_TYPES`, ``match_metric`` one of :data:`MATCH_METRICS`, ``match_threshold`` in ``(0, 1]``,
    ``class_agnostic``), and ``standard_prediction``: also detect on the whole image (SAHI's default)."""

    size: int = 512
    overlap: float = 0.2
    merge: str = "GREEDYNMM"
    match_metric: str = "IOS"
    match_threshold: float = 0.5
    standard_prediction: bool = True
    class_agnostic: bool = False

    def __post_init__(self) -> None:
        check_tiling(self.size, self.overlap, what="size")
        if self.merge not in MERGE_TYPES:
            raise ValueError(f"merge={self.merge!r}: use one of {', '.join(MERGE_TYPES)}")
        if self.match_metric not in MATCH_METRICS:
            raise ValueError(f"match_metric={self.match_metric!r}: use IOS (intersection over the smaller box) or IOU")
        if isinstance(self.match_threshold, bool) or not isinstance(self.match_threshold, (int, float)) \
                or not 0 < self.match_threshold <= 1:
            raise ValueError(f"match_threshold={self.match_threshold!r} must be in (0, 1], e.g. 0.5")

    def tiles_for(self, height: int, width: int) -> int:
        """How many tiles an image of ``height`` x ``width`` is cut into (plus one whole-image pass if asked)."""
        check_tiling(self.size, self.overlap, (height, width), what="size")
        return tile_count(height, width, self.size, self.overlap) + int(self.standard_prediction)


def _rgb(image: np.ndarray | str | os.PathLike) -> np.ndarray:
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image of shape {image.shape} and dtype {image.dtype}: pass uint8 [H, W, 3] RGB")
        return image
    with Image.open(image) as opened:
        return np.asarray(opened.convert("RGB"))


def predict_image(detection_model: SodlibDetectionModel, image: np.ndarray | str | os.PathLike,
                  slicing: SliceSettings | None = None) -> list[ObjectPrediction]:
    """SAHI's ``ObjectPrediction``\\ s of one image (``uint8 [H, W, 3]`` RGB or a file): the whole image at the
    detector's input size (``slicing=None``, SAHI's ``get_prediction``), or sliced and merged
    (``get_sliced_prediction`` with ``slicing``'s settings). A tile larger than the image is refused first."""
    pixels = _rgb(image)
    height, width = pixels.shape[:2]
    if slicing is None:
        return get_prediction(pixels, detection_model, shift_amount=[0, 0], full_shape=[height, width]).object_prediction_list
    slicing.tiles_for(height, width)  # refuses a tile larger than the image
    result = get_sliced_prediction(
        pixels, detection_model, slice_height=slicing.size, slice_width=slicing.size,
        overlap_height_ratio=slicing.overlap, overlap_width_ratio=slicing.overlap,
        perform_standard_pred=slicing.standard_prediction, postprocess_type=slicing.merge,
        postprocess_match_metric=slicing.match_metric, postprocess_match_threshold=slicing.match_threshold,
        postprocess_class_agnostic=slicing.class_agnostic, verbose=0, auto_slice_resolution=False,
        force_postprocess_type=True)  # keep the merge asked for, whatever the confidence threshold
    return result.object_prediction_list


def object_predictions_to_coco(predictions: Sequence[ObjectPrediction], image_id: int) -> list[dict]:
    """COCO results records ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` (what
    ``pycocotools``' ``loadRes`` reads) of one image's predictions."""
    records = []
    for prediction in predictions:
        x1, y1, x2, y2 = prediction.bbox.to_xyxy()
        records.append({"image_id": int(image_id), "category_id": int(prediction.category.id),
                        "bbox": [round(float(x1), 2), round(float(y1), 2), round(float(x2 - x1), 2),
                                 round(float(y2 - y1), 2)],
                        "score": round(float(prediction.score.value), 5)})
    return records


def check_images_fit(images: Sequence[tuple[int, str | os.PathLike]],
                     slicing: SliceSettings | None) -> list[tuple[int, int]]:
    """``[(height, width)]`` of ``images`` (``[(image_id, path)]``), read from their headers; a missing file, or
    (with ``slicing``) an image smaller than the tile, is refused naming the image."""
    sizes = []
    for image_id, path in images:
        if not Path(path).is_file():
            raise FileNotFoundError(f"image id {image_id}: {path} does not exist")
        with Image.open(path) as opened:
            sizes.append((opened.height, opened.width))
        if slicing is not None:
            try:
                slicing.tiles_for(*sizes[-1])
            except ValueError as error:
                raise ValueError(f"image id {image_id} ({path}): {error}") from None
    return sizes


def predict_images(detection_model: SodlibDetectionModel, images: Sequence[tuple[int, str | os.PathLike]],
                   slicing: SliceSettings | None = None, *, progress: bool = True,
                   timings: dict | None = None) -> list[dict]:
    """COCO results of ``images`` (``[(image_id, path)]``), whole or sliced (:func:`predict_image`).

    Every image's size is read first, so that a tile larger than any image is refused before any detection.
    ``timings`` receives ``ms_per_image`` (reading, slicing, detection and merging) and ``tiles_per_image``."""
    from tqdm.auto import tqdm

    sizes = check_images_fit(images, slicing)
    records: list[dict] = []
    started = time.perf_counter()
    for image_id, path in tqdm(images, desc="sliced inference" if slicing else "inference", unit="img",
                               disable=not progress):
        records += object_predictions_to_coco(predict_image(detection_model, path, slicing), image_id)
    if timings is not None:
        timings["ms_per_image"] = round(1000 * (time.perf_counter() - started) / max(len(images), 1), 2)
        timings["tiles_per_image"] = (float(np.mean([slicing.tiles_for(*size) for size in sizes]))
                                      if slicing is not None and sizes else 1.0)
    logger.info("%d images, %d detections", len(images), len(records))
    return records
