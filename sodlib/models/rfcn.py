r"""R-FCN (Dai et al., 2016) and precise R-FCN (Zhang et al., 2021): a detector whose per-RoI head is a pooling.

Faster R-CNN runs two fully connected layers for every RoI. R-FCN moves all the learned computation before the
RoIs: a convolution turns the stride-16 features into :math:`k^2 (C + 1)` *position-sensitive* class maps and
:math:`4 k^2` box maps, and a RoI is scored by pooling bin :math:`(i, j)` of its :math:`k \times k` grid from the
maps of that bin only, then **voting**, the mean over the bins:

.. math::
    r_c(\text{RoI}) = \frac{1}{k^2} \sum_{i, j} \mathrm{pool}_{ij}\bigl(z_{(i, j), c}, \text{RoI}\bigr), \qquad
    p_c = \mathrm{softmax}_c(r),

so a class scores high only when every part of the box sees the matching part of an object. The pooling is
the only difference between the variants (``pooling``): ``"ps_roi_pool"`` (the original: the bins rounded to the
feature grid, an average of the cells per bin), ``"ps_roi_align"`` (bilinear samples), ``"ps_prroi"`` (precise
R-FCN: the exact integral of the interpolated map, :func:`sodlib.ops.ps_prroi_pool`). All three read the RoIs in one
convention (feature cell ``j`` at ``x = 16 j`` in the image, as torchvision's ``roi_align(aligned=False)``):
``ps_roi_align``'s half-cell shift is undone (:func:`sodlib.ops.ps_roi_align_pixel_convention`).

Data flow (torchvision's ``GeneralizedRCNN``): ``GeneralizedRCNNTransform`` -> backbone: ``conv4`` (stride 16)
and ``conv5`` with its stride removed and its 3x3 convolutions dilated by 2 (so it stays at stride 16, as R-FCN)
-> RPN on ``conv4`` (``SodlibAnchorGenerator``, one level) -> a 1x1 reduction of ``conv5`` -> the
position-sensitive maps -> pooling and voting -> torchvision's box decoding and per-class NMS.

Training follows the papers: RoIs are positive at IoU >= 0.5 with a ground-truth box, negative below; **OHEM**:
the classification + box loss is computed for every proposal and only the ``ohem_batch_size`` RoIs with the
highest loss of each image are back-propagated; box regression is class-agnostic (one ``4 k^2`` map set). Test:
300 proposals, NMS 0.3.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import boxes as box_ops

from sodlib.models.anchor_generator import SodlibAnchorGenerator
from sodlib.models.backbones import NARROW_RESNETS, TORCHVISION_RESNETS, resnet_conv4_conv5
from sodlib.models.registry import register_model
from sodlib.ops.position_sensitive import POOLINGS, check_pooling_name, position_sensitive_vote, ps_pool
from sodlib.ops.prroi import ps_prroi_pool

__all__ = ["POOLINGS", "RFCN_ANCHOR_SIZES", "position_sensitive_vote", "ohem_select", "jitter_boxes", "as_rois",
           "iou_guided_nms", "PositionSensitiveHead", "RFCNRoIHeads", "rfcn", "class_score_maps", "refinement_path"]

#: Default anchor sizes of the single stride-16 level: one octave apart from 16 px, so that every object side
#: from 16 to 256 px has an anchor within a factor sqrt(2) of it (the original R-FCN used 128, 256, 512 on
#: PASCAL VOC, far too large for small objects; see notebook 02).
RFCN_ANCHOR_SIZES: tuple[float, ...] = (16.0, 32.0, 64.0, 128.0, 256.0)

STRIDE = 16


def as_rois(boxes: list[Tensor]) -> Tensor:
    """Per image ``Tensor[R_i, 4]`` boxes -> ``Tensor[R, 5]`` RoIs ``(image index, x1, y1, x2, y2)``."""
    return torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], dim=1) for i, b in enumerate(boxes)])


def jitter_boxes(boxes: Tensor, count: int, generator: torch.Generator | None = None,
                 min_iou: float = 0.5) -> tuple[Tensor, Tensor]:
    """IoU-Net's training boxes: ``count`` random boxes around each of ``boxes`` (``Tensor[G, 4]``), their centre
    moved by up to a quarter of the box's width / height and each side scaled by a factor in ``[0.7, 1.4]``
    (log-uniform); those with an IoU of at least ``min_iou`` with their source are kept.

    Returns ``(jittered Tensor[J, 4], iou Tensor[J])``.
    """
    if len(boxes) == 0:
        return boxes.new_zeros(0, 4), boxes.new_zeros(0)
    source = boxes.repeat_interleave(count, dim=0)
    size = (source[:, 2:] - source[:, :2]).clamp(min=1e-3)
    centre = (source[:, :2] + source[:, 2:]) / 2
    draw = torch.rand(len(source), 4, generator=generator, device=boxes.device)
    centre = centre + (draw[:, :2] - 0.5) * 0.5 * size
    size = size * torch.exp(math.log(0.7) + draw[:, 2:] * (math.log(1.4) - math.log(0.7)))
    jittered = torch.cat([centre - size / 2, centre + size / 2], dim=1)
    iou = box_ops.box_iou(jittered, source).diagonal()
    keep = iou >= min_iou
    return jittered[keep], iou[keep]


def ohem_select(losses: Tensor, images: Tensor, batch_size: int) -> Tensor:
    """Online hard example mining: the indices of the ``batch_size`` largest ``losses`` of each image
    (``images[r]`` is RoI ``r``'s image), sorted; an image with fewer RoIs keeps all of them.

    ``losses``, ``images``: ``Tensor[R]``. Returns ``Tensor[M]`` int64 indices into them.
    """
    keep = []
    for image in torch.unique(images):
        members = torch.nonzero(images == image).flatten()
        order = torch.argsort(losses[members].detach(), descending=True, stable=True)
        keep.append(members[order[:batch_size]])
    return torch.sort(torch.cat(keep)).values if keep else torch.zeros(0, dtype=torch.int64, device=losses.device)


def iou_guided_nms(boxes: Tensor, scores: Tensor, localization: Tensor, labels: Tensor,
                   iou_threshold: float) -> tuple[Tensor, Tensor]:
    """IoU-guided NMS (Jiang et al., 2018, Algorithm 1), class by class.

    Boxes are visited in decreasing *predicted IoU* (``localization``, not the class score); each kept box
    suppresses the boxes of its class that overlap it by IoU > ``iou_threshold`` and takes the highest class
    score of the cluster it suppressed (itself included), so that the best-localised box of a cluster survives
    with the cluster's confidence.

    Args: ``boxes Tensor[N, 4]`` (xyxy), ``scores``, ``localization``, ``labels``: ``Tensor[N]``.
    Returns: ``(keep Tensor[K] int64`` indices into the inputs, in decreasing new score, ``scores Tensor[K])``.
    """
    keep, kept_scores = [], []
    for label in labels.unique():
        members = torch.nonzero(labels == label).flatten()
        members = members[localization[members].argsort(descending=True, stable=True)]
        overlaps = box_ops.box_iou(boxes[members], boxes[members])
        suppressed = torch.zeros(len(members), dtype=torch.bool, device=boxes.device)
        for i in range(len(members)):
            if suppressed[i]:
                continue
            cluster = ~suppressed & (overlaps[i] > iou_threshold)
            cluster[i] = True
            keep.append(members[i])
            kept_scores.append(scores[members[cluster]].max())
            suppressed |= cluster
    if not keep:
        return boxes.new_zeros(0, dtype=torch.int64), scores.new_zeros(0)
    keep_t, scores_t = torch.stack(keep), torch.stack(kept_scores)
    order = scores_t.argsort(descending=True, stable=True)
    return keep_t[order], scores_t[order]


class _DilatedConv5Backbone(nn.Module):
    """``conv4`` (stride 16) as ``"0"`` and ``conv5`` at stride 16 (stride removed, 3x3 convolutions dilated
    by 2) as ``"conv5"``: ``Tensor[B, 3, H, W]`` -> ``{"0": Tensor[B, C4, H/16, W/16], "conv5": Tensor[B, C5,
    H/16, W/16]}``."""

    def __init__(self, conv4: nn.Module, conv5: nn.Module, conv4_channels: int, conv5_channels: int):
        super().__init__()
        self.conv4, self.conv5 = conv4, conv5
        self.out_channels = conv4_channels
        self.conv5_channels = conv5_channels
        for module in conv5.modules():
            if isinstance(module, nn.Conv2d):
                if module.stride != (1, 1):
                    module.stride = (1, 1)
                if module.kernel_size == (3, 3):
                    module.dilation, module.padding = (2, 2), (2, 2)

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        c4 = self.conv4(x)
        return OrderedDict([("0", c4), ("conv5", self.conv5(c4))])


def _backbone(name: str, pretrained: bool) -> _DilatedConv5Backbone:
    if name in (*NARROW_RESNETS, *TORCHVISION_RESNETS):
        return _DilatedConv5Backbone(*resnet_conv4_conv5(name, pretrained))
    raise ValueError(f"backbone={name!r} is not available for R-FCN; choose one of "
                     f"{', '.join((*NARROW_RESNETS, *TORCHVISION_RESNETS))}")


class _ConvFourRPN(RegionProposalNetwork):
    """torchvision's RPN on the ``conv4`` map only (the backbone also returns ``conv5``, for the head)."""

    def forward(self, images, features, targets=None):
        return super().forward(images, {"0": features["0"]}, targets)


class PositionSensitiveHead(nn.Module):
    r"""The per-RoI part of R-FCN: position-sensitive maps from ``conv5``, pooled and voted.

    ``forward(features, proposals, image_shapes)`` with ``features["conv5"]``: ``Tensor[B, C5, H/16, W/16]`` and
    ``proposals``: per image ``Tensor[R_i, 4]`` (input-image pixels) returns ``(class_logits Tensor[R, C + 1],
    box_deltas Tensor[R, 4])``, ``R = sum R_i``.
    """

    def __init__(self, in_channels: int, num_classes: int, k: int = 7, pooling: str = "ps_prroi",
                 reduced_channels: int = 256, sampling_ratio: int = 2, iou_head: bool = False):
        super().__init__()
        check_pooling_name(pooling)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k={k!r} must be a positive integer (the bins per side of a RoI; 7 in R-FCN)")
        if isinstance(sampling_ratio, bool) or not isinstance(sampling_ratio, int) or sampling_ratio < 0:
            raise ValueError(f"sampling_ratio={sampling_ratio!r} must be an integer >= 0 (0: adaptive, as torchvision)")
        self.k, self.pooling, self.num_classes, self.sampling_ratio = k, pooling, num_classes, sampling_ratio
        self.reduce = nn.Sequential(nn.Conv2d(in_channels, reduced_channels, 1), nn.ReLU(inplace=True))
        self.class_maps = nn.Conv2d(reduced_channels, k * k * num_classes, 1)
        self.box_maps = nn.Conv2d(reduced_channels, k * k * 4, 1)
        # IoU-Net's localisation confidence, on position-sensitive maps of its own, always pooled exactly
        # (PS-PrRoI), so that its gradient with respect to the box exists (box refinement climbs it)
        self.iou_maps = nn.Conv2d(reduced_channels, k * k, 1) if iou_head else None
        for conv in (self.class_maps, self.box_maps, *( [self.iou_maps] if iou_head else [])):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def pool(self, maps: Tensor, rois: Tensor) -> Tensor:
        """``maps``: ``Tensor[B, k^2 C', H, W]``; ``rois``: ``Tensor[R, 5]`` -> ``Tensor[R, C', k, k]``."""
        return ps_pool(maps, rois, self.k, 1.0 / STRIDE, self.pooling, self.sampling_ratio)

    def forward(self, features: dict[str, Tensor], proposals: list[Tensor], image_shapes) -> tuple[Tensor, Tensor]:
        return self.scores(self.reduce(features["conv5"]), proposals)

    def scores(self, reduced: Tensor, boxes: list[Tensor]) -> tuple[Tensor, Tensor]:
        """``reduced``: ``Tensor[B, reduced_channels, H/16, W/16]`` -> ``(class_logits Tensor[R, C + 1],
        box_deltas Tensor[R, 4])`` of the boxes (per image ``Tensor[R_i, 4]``)."""
        rois = as_rois(boxes)
        class_logits = position_sensitive_vote(self.pool(self.class_maps(reduced), rois))
        box_deltas = position_sensitive_vote(self.pool(self.box_maps(reduced), rois))
        return class_logits, box_deltas

    def predicted_iou(self, reduced: Tensor, boxes: list[Tensor]) -> Tensor:
        """The predicted IoU of each box with the object it covers, ``Tensor[R]`` in (0, 1): the sigmoid of the
        vote of its PS-PrRoI-pooled IoU maps; differentiable in the box coordinates."""
        if self.iou_maps is None:
            raise ValueError("this head has no IoU branch; fix: build the model with iou_head=True")
        rois = as_rois(boxes)
        pooled = ps_prroi_pool(self.iou_maps(reduced), rois, self.k, 1.0 / STRIDE)
        return torch.sigmoid(position_sensitive_vote(pooled)[:, 0])


class RFCNRoIHeads(RoIHeads):
    """torchvision's ``RoIHeads`` with R-FCN's head: a :class:`PositionSensitiveHead` instead of RoI pooling plus
    fully connected layers, class-agnostic box regression, and OHEM in training (module docstring).

    With the head's IoU branch, training adds ``loss_iou``: the smooth-L1 distance (beta 0.1) between the
    predicted and the true IoU of ``iou_samples`` jittered copies of each ground-truth box (:func:`jitter_boxes`,
    IoU-Net's recipe). With ``refine_steps > 0`` every detection is then refined at test time by gradient ascent
    of its predicted IoU through PS-PrRoI pooling's box gradient (:meth:`refine`), and detections carry
    ``predicted_iou``.
    """

    def __init__(self, head: PositionSensitiveHead, *, ohem_batch_size: int = 128, fg_iou_thresh: float = 0.5,
                 bg_iou_thresh: float = 0.5, bbox_reg_weights: Sequence[float] | None = None, score_thresh: float = 0.05,
                 nms_thresh: float = 0.3, detections_per_img: int = 100, iou_samples: int = 16, refine_steps: int = 0,
                 refine_step_size: float = 0.05, iou_guided_nms: bool = False):
        # the sampler keeps every proposal (OHEM chooses among them by their loss)
        super().__init__(None, None, None, fg_iou_thresh, bg_iou_thresh, 1 << 30, 1.0, bbox_reg_weights, score_thresh,
                         nms_thresh, detections_per_img)
        for name, value in (("ohem_batch_size", ohem_batch_size), ("iou_samples", iou_samples)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        if isinstance(refine_steps, bool) or not isinstance(refine_steps, int) or refine_steps < 0:
            raise ValueError(f"refine_steps={refine_steps!r} must be an integer >= 0 (0: no box refinement)")
        if refine_steps and head.iou_maps is None:
            raise ValueError("refine_steps > 0 climbs the predicted IoU; fix: iou_head=True as well")
        if not isinstance(iou_guided_nms, bool):
            raise ValueError(f"iou_guided_nms={iou_guided_nms!r} must be true or false")
        if iou_guided_nms and head.iou_maps is None:
            raise ValueError("iou_guided_nms ranks boxes by their predicted IoU; fix: iou_head=True as well")
        if not refine_step_size > 0:
            raise ValueError(f"refine_step_size={refine_step_size!r} must be positive (a fraction of the box size)")
        self.head = head
        self.ohem_batch_size, self.iou_samples = ohem_batch_size, iou_samples
        self.refine_steps, self.refine_step_size = refine_steps, float(refine_step_size)
        self.iou_guided_nms = iou_guided_nms

    def forward(self, features, proposals, image_shapes, targets=None):
        reduced = self.head.reduce(features["conv5"])
        if self.training:
            ground_truth = [t["boxes"] for t in targets]
            proposals, _, labels, regression_targets = self.select_training_samples(proposals, targets)
        class_logits, box_deltas = self.head.scores(reduced, proposals)
        if self.training:
            losses = self.ohem_losses(class_logits, box_deltas, proposals, labels, regression_targets)
            if self.head.iou_maps is not None:
                losses["loss_iou"] = self.iou_loss(reduced, ground_truth)
            return [], losses
        per_class = box_deltas.repeat(1, class_logits.shape[1])  # one box for every class
        if self.iou_guided_nms:
            boxes, scores, labels = self.iou_guided_detections(reduced, class_logits, per_class, proposals, image_shapes)
        else:
            boxes, scores, labels = self.postprocess_detections(class_logits, per_class, proposals, image_shapes)
        detections = [{"boxes": b, "scores": s, "labels": l} for b, s, l in zip(boxes, scores, labels)]
        if self.head.iou_maps is not None:
            refined, ious = self.refine(reduced, boxes, image_shapes, self.refine_steps)
            for detection, box, iou in zip(detections, refined, ious):
                detection["boxes"], detection["predicted_iou"] = box, iou
        return detections, {}

    def iou_guided_detections(self, reduced: Tensor, class_logits: Tensor, box_deltas: Tensor, proposals: list[Tensor],
                              image_shapes) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """torchvision's decoding, score threshold and small-box removal, then :func:`iou_guided_nms` on the
        predicted IoU of every candidate instead of per-class NMS on the scores; at most ``detections_per_img``."""
        nms_thresh, limit = self.nms_thresh, self.detections_per_img
        self.nms_thresh, self.detections_per_img = 1.0, 1 << 30  # no suppression: every candidate, sorted
        try:
            candidates = self.postprocess_detections(class_logits, box_deltas, proposals, image_shapes)
        finally:
            self.nms_thresh, self.detections_per_img = nms_thresh, limit
        kept: tuple[list[Tensor], list[Tensor], list[Tensor]] = ([], [], [])
        for image, (boxes, scores, labels) in enumerate(zip(*candidates)):
            localization = self.head.predicted_iou(reduced[image:image + 1], [boxes])
            keep, new_scores = iou_guided_nms(boxes, scores, localization, labels, nms_thresh)
            keep, new_scores = keep[:limit], new_scores[:limit]
            for collected, value in zip(kept, (boxes[keep], new_scores, labels[keep])):
                collected.append(value)
        return kept

    def iou_loss(self, reduced: Tensor, ground_truth: list[Tensor]) -> Tensor:
        """Smooth-L1 (beta 0.1) between predicted and true IoU over the jittered ground-truth boxes of all images."""
        jittered = [jitter_boxes(boxes.detach(), self.iou_samples) for boxes in ground_truth]
        if sum(len(boxes) for boxes, _ in jittered) == 0:
            return reduced.sum() * 0.0
        predicted = self.head.predicted_iou(reduced, [boxes for boxes, _ in jittered])
        return F.smooth_l1_loss(predicted, torch.cat([iou for _, iou in jittered]), beta=0.1)

    def refine(self, reduced: Tensor, boxes: list[Tensor], image_shapes, steps: int) -> tuple[list[Tensor], list[Tensor]]:
        """``steps`` of gradient ascent of the predicted IoU with respect to the boxes (IoU-Net's optimisation-based
        refinement): ``b <- b + step_size * (w, h, w, h) * d IoU / d b``, each box clipped to its image; a step that
        would lower a box's predicted IoU is not taken for that box. Returns the boxes and their predicted IoU."""
        reduced = reduced.detach()
        counts = [len(b) for b in boxes]
        current = torch.cat(boxes).detach() if counts else reduced.new_zeros(0, 4)

        def predicted(box: Tensor) -> Tensor:
            return self.head.predicted_iou(reduced, list(box.split(counts)))

        for _ in range(steps):
            with torch.enable_grad():
                leaf = current.clone().requires_grad_(True)
                iou = predicted(leaf)
                (gradient,) = torch.autograd.grad(iou.sum(), leaf)
            with torch.no_grad():
                size = (current[:, 2:] - current[:, :2]).repeat(1, 2)
                stepped = current + self.refine_step_size * size * gradient
                candidate = torch.cat([box_ops.clip_boxes_to_image(b, shape) for b, shape in zip(stepped.split(counts), image_shapes)])
                better = predicted(candidate) >= iou.detach()
                current = torch.where(better[:, None], candidate, current)
        with torch.no_grad():
            iou = predicted(current)
        return list(current.detach().split(counts)), list(iou.detach().split(counts))

    def ohem_losses(self, class_logits: Tensor, box_deltas: Tensor, proposals: list[Tensor], labels: list[Tensor],
                    regression_targets: list[Tensor]) -> dict[str, Tensor]:
        """Cross-entropy + smooth-L1 (beta 1/9, positives only) per RoI; the mean over the OHEM selection of each
        image, divided as torchvision divides (by the number of RoIs kept)."""
        labels_all = torch.cat(labels)
        targets_all = torch.cat(regression_targets)
        images = torch.cat([torch.full((len(p),), i, device=labels_all.device) for i, p in enumerate(proposals)])
        classification = F.cross_entropy(class_logits, labels_all, reduction="none")
        # negatives carry no box target: where() keeps a degenerate one (a near-empty box's log ratio) out of the sum
        box = torch.where(labels_all > 0,
                          F.smooth_l1_loss(box_deltas, targets_all, beta=1 / 9, reduction="none").sum(dim=1), 0.0)
        keep = ohem_select(classification + box, images, self.ohem_batch_size)
        count = max(len(keep), 1)
        return {"loss_classifier": classification[keep].sum() / count, "loss_box_reg": box[keep].sum() / count}


def _reduced_features(model: GeneralizedRCNN, image: Tensor) -> tuple[Tensor, tuple[int, int], Tensor]:
    """One image through R-FCN's resize, backbone and 1x1 reduction: ``(reduced Tensor[1, D, H', W'],
    resized (height, width), scale Tensor[4])``, ``scale`` turning image boxes into resized ones."""
    if not isinstance(getattr(model, "roi_heads", None), RFCNRoIHeads):
        raise ValueError("the model is not an R-FCN; fix: build it with build_model('rfcn', ...)")
    transformed, _ = model.transform([image])
    reduced = model.roi_heads.head.reduce(model.backbone(transformed.tensors)["conv5"])
    height, width = transformed.image_sizes[0]
    sy, sx = height / image.shape[-2], width / image.shape[-1]
    return reduced, (height, width), torch.tensor([sx, sy, sx, sy], dtype=reduced.dtype, device=reduced.device)


@torch.no_grad()
def class_score_maps(model: GeneralizedRCNN, image: Tensor) -> tuple[Tensor, Tensor]:
    """The position-sensitive class maps of an R-FCN for one image ``Tensor[3, H, W]``:
    ``(maps Tensor[C + 1, k^2, H', W'], scale Tensor[4])``; map ``[c, i * k + j]`` is what bin ``(i, j)`` of a RoI
    reads for class ``c`` (input channel ``(c k + i) k + j``), on the stride-16 grid of the *resized* image, and
    ``box * scale`` puts an image box on that grid."""
    was_training = model.training
    model.eval()
    try:
        reduced, _, scale = _reduced_features(model, image)
        head = model.roi_heads.head
        maps = head.class_maps(reduced)[0]
    finally:
        model.train(was_training)
    return maps.reshape(head.num_classes, head.k * head.k, *maps.shape[-2:]), scale


@torch.no_grad()
def refinement_path(model: GeneralizedRCNN, image: Tensor, boxes: Tensor, steps: int) -> tuple[Tensor, Tensor]:
    """IoU-Net's refinement of ``boxes`` (``Tensor[N, 4]``, image px) in one image, step by step: ``(path
    Tensor[steps + 1, N, 4]`` in image px, ``predicted_iou Tensor[steps + 1, N])``, row 0 the boxes given. Each
    row is one :meth:`RFCNRoIHeads.refine` step from the row before, so the last row is what ``refine_steps =
    steps`` gives a detection at test time."""
    heads = model.roi_heads
    if not isinstance(heads, RFCNRoIHeads) or heads.head.iou_maps is None:
        raise ValueError("refinement needs an R-FCN with an IoU branch; fix: build_model('rfcn', ..., iou_head=True)")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps={steps!r} must be an integer >= 0")
    was_training = model.training
    model.eval()
    try:
        reduced, size, scale = _reduced_features(model, image)
        current = boxes.to(reduced) * scale
        path, ious = [current], [heads.head.predicted_iou(reduced, [current])]
        for _ in range(steps):
            refined, iou = heads.refine(reduced, [current], [size], 1)
            current = refined[0]
            path.append(current)
            ious.append(iou[0])
    finally:
        model.train(was_training)
    return torch.stack(path) / scale, torch.stack(ious)


@register_model("rfcn")
def rfcn(
    num_classes: int,
    backbone: str = "resnet_narrow",
    pooling: str = "ps_prroi",
    k: int = 7,
    anchor_sizes: Sequence[float] = RFCN_ANCHOR_SIZES,
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    min_size: int = 600,
    max_size: int = 1000,
    *,
    reduced_channels: int | None = None,
    sampling_ratio: int = 2,
    ohem_batch_size: int = 128,
    iou_head: bool = False,
    refine_steps: int = 0,
    refine_step_size: float = 0.05,
    iou_guided_nms: bool = False,
    iou_samples: int = 16,
    pretrained_backbone: bool = False,
    anchor_offset: float = 0.0,
    rpn_pre_nms_top_n_train: int = 2000,
    rpn_post_nms_top_n_train: int = 300,
    rpn_pre_nms_top_n_test: int = 1000,
    rpn_post_nms_top_n_test: int = 300,
    rpn_batch_size_per_image: int = 256,
    box_score_thresh: float = 0.05,
    box_nms_thresh: float = 0.3,
    box_detections_per_img: int = 100,
) -> GeneralizedRCNN:
    """R-FCN with the chosen position-sensitive pooling (module docstring); torchvision's detection API.

    Args:
        num_classes: object categories plus one for the background.
        backbone: ``resnet_tiny`` / ``resnet_narrow`` (CPU) or a torchvision ResNet.
        pooling: ``"ps_roi_pool"``, ``"ps_roi_align"`` or ``"ps_prroi"`` (precise R-FCN, the default).
        k: bins per side of a RoI (7 in both papers).
        anchor_sizes: the sizes of the single stride-16 RPN level, in resized-image pixels.
        min_size, max_size: the resize of ``GeneralizedRCNNTransform`` (R-FCN: 600 / 1000).
        reduced_channels: width of the 1x1 reduction of ``conv5`` (1024 in R-FCN; default 1024 for the
            torchvision ResNets and 2x the ``conv5`` width, at most 256, for the narrow ones, to train on a CPU).
        sampling_ratio: bilinear samples per bin side of ``"ps_roi_align"``.
        ohem_batch_size: RoIs per image back-propagated by OHEM (128).
        iou_head: add IoU-Net's IoU prediction on PS-PrRoI-pooled maps, trained on ``iou_samples`` jittered copies
            of each ground-truth box (``loss_iou``); detections then carry ``predicted_iou``.
        refine_steps, refine_step_size: box refinement at test time by that many steps of gradient ascent of the
            predicted IoU, each moving the box edges by ``refine_step_size`` times its size times the gradient
            (0: off; needs ``iou_head``). Our choice of 0.05, as the papers leave the step size to the reader.
        iou_guided_nms: suppress by predicted IoU instead of class score (:func:`iou_guided_nms`; needs
            ``iou_head``). Off by default, as refinement.
        rpn_*, box_*: as torchvision's ``FasterRCNN`` (300 proposals at test, NMS 0.3 as R-FCN).
    """
    if int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"num_classes={num_classes!r} counts the background too, so it is at least 2; "
                         "fix: pass dataset.num_classes (categories + 1)")
    body = _backbone(backbone, pretrained_backbone)
    if reduced_channels is None:
        reduced_channels = 1024 if backbone in TORCHVISION_RESNETS else min(256, 2 * body.conv5_channels)
    anchor_generator = SodlibAnchorGenerator((tuple(float(s) for s in anchor_sizes),), tuple(aspect_ratios),
                                             offset=anchor_offset)
    rpn = _ConvFourRPN(anchor_generator, RPNHead(body.out_channels, anchor_generator.num_anchors_per_location()[0]),
                       fg_iou_thresh=0.7, bg_iou_thresh=0.3, batch_size_per_image=rpn_batch_size_per_image,
                       positive_fraction=0.5,
                       pre_nms_top_n={"training": rpn_pre_nms_top_n_train, "testing": rpn_pre_nms_top_n_test},
                       post_nms_top_n={"training": rpn_post_nms_top_n_train, "testing": rpn_post_nms_top_n_test},
                       nms_thresh=0.7)
    head = PositionSensitiveHead(body.conv5_channels, int(num_classes), k=k, pooling=pooling,
                                 reduced_channels=reduced_channels, sampling_ratio=sampling_ratio, iou_head=iou_head)
    roi_heads = RFCNRoIHeads(head, ohem_batch_size=ohem_batch_size, score_thresh=box_score_thresh,
                             nms_thresh=box_nms_thresh, detections_per_img=box_detections_per_img,
                             iou_samples=iou_samples, refine_steps=refine_steps, refine_step_size=refine_step_size,
                             iou_guided_nms=iou_guided_nms)
    transform = GeneralizedRCNNTransform(int(min_size), int(max_size), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    model = GeneralizedRCNN(body, rpn, roi_heads, transform)
    return model
