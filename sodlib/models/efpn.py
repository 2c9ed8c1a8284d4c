r"""EFPN (Deng et al., 2021): Faster R-CNN with an extended feature pyramid, one level finer than FPN's finest.

FPN pools every RoI under 112 px from ``P2`` (stride 4): a 12 px object is 3 x 3 cells there, and FPN has no finer
map. EFPN adds ``P'2`` at stride 2 built from the 1x input, trained to look like ``P2`` of the 2x input:

- ``C'2``: stage 2 of the backbone run at twice its resolution with the same weights. The paper removes the
  max-pool in front of ResNet's stage 2; sodlib's narrow ResNets have no max-pool (their stem is two stride-2
  convolutions), so there the stem's second convolution runs at stride 1 instead, which removes the same factor 2;
  a backbone with neither (MobileNet, or no FPN) is refused.
- FTT (feature texture transfer, eq. 3): ``P'3 = E_t(P2 || up(E_c(P3))) + up(E_c(P3))``, ``E_c`` and ``E_t`` two
  residual blocks each, ``up`` a sub-pixel convolution (a 3x3 convolution to ``4 C`` channels, then
  ``nn.PixelShuffle(2)``), ``||`` concatenation along channels. ``P'3`` has ``P2``'s resolution and ``P3``'s content.
- ``P'2 = nearest_up(P'3) + lateral(C'2)`` (eq. 1), the lateral a 1x1 convolution (initialised from FPN's ``C2``
  lateral).

For the ablations ``sr_module`` swaps FTT for a three-layer ESPCN on ``P3`` alone (``"espcn"``) or for
nearest-neighbour upsampling of ``P3`` (``"nearest"``, no parameters).

Shapes for a padded batch ``[B, 3, H, W]`` (``H, W`` multiples of 32) and ``C`` pyramid channels::

    C2 [B, c2, H/4, W/4]   C'2 [B, c2, H/2, W/2]   P2 [B, C, H/4, W/4]   P3 [B, C, H/8, W/8]
    E_c(P3) [B, C, H/8, W/8] -> conv [B, 4C, H/8, W/8] -> PixelShuffle(2) [B, C, H/4, W/4]
    P2 || up(E_c(P3)) [B, 2C, H/4, W/4] -> E_t [B, C, H/4, W/4] -> P'3 [B, C, H/4, W/4]
    P'2 = nearest_up(P'3) + lateral(C'2) [B, C, H/2, W/2]

(for other sizes each upsampled map is cropped, or padded by repeating its edge, to the size of the map it meets).

**RoIs and heads.** The RPN runs on ``P'2, P2 .. P6`` (``P'2``'s anchors half of ``P2``'s). A RoI whose side
``sqrt(w h)`` is under ``extended_threshold`` is pooled from ``P'2`` (:mod:`sodlib.pyramid_levels`); the rest keep
FPN's levels (``floor(4 + log2(sqrt(w h) / 224))`` clamped to 2..5). Stage 2 classifies ``P'2``'s RoIs with the
original head (the shared head); stage 3 gives them a head of their own, initialised from the original and
fine-tuned with OHEM, and at test time the two heads' detections are merged by the usual per-class NMS.

**Training** (seed 004 §IV-A), one model option ``stage``:

- stage 1 is the FPN baseline itself (``faster_rcnn`` with the same options);
- ``stage=2``: backbone, FPN, RPN and box head frozen (batch norm in eval mode); only ``lateral`` and the SR module
  learn, from the cross-resolution distillation ``L = L_fbb(P'3, P3^2x) + L_fbb(P'2, P2^2x)``
  (:func:`sodlib.models.losses.fbb_loss`) where ``P^2x`` are the same frozen FPN's levels of the batch upsampled
  2x (bilinear), the teacher; ``distill_loss="global"`` keeps the L1 over the map alone, ``distill_p3=False``
  drops the ``P'3`` term, ``detection_loss=True`` adds the detector's losses (through the frozen heads), and
  ``distill_loss="none"`` with ``detection_loss=True`` is the paper's "extended level alone";
- ``stage=3``: everything frozen but the ``P'2`` head, trained with OHEM (the ``ohem_batch_size`` hardest of all
  proposals under the threshold, per image).

``extended_source="teacher"`` (a test-time option) replaces ``P'2`` and ``P'3`` with the teacher's ``P2`` and
``P3`` of the 2x input: the paper's "FPN-1400 + P2-2800" oracle. ``probe`` pools every RoI from one map with the
original head (``"p3"``: ``P3``; ``"p3_2x"``: the 2x input's ``P3``; ``"p3_extended"``: ``P'3``), the paper's
Table V.
"""
from __future__ import annotations

import inspect
import math
from collections import OrderedDict
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss
from torchvision.ops import box_area, roi_align

from sodlib.models.anchor_generator import SodlibAnchorGenerator
from sodlib.models.backbones import NARROW_RESNETS, TORCHVISION_RESNETS
from sodlib.models.faster_rcnn import DETECTOR_OPTIONS, faster_rcnn
from sodlib.models.losses import fbb_loss
from sodlib.models.registry import register_model
from sodlib.models.rfcn import ohem_select
from sodlib.pyramid_levels import default_extended_threshold

__all__ = ["SR_MODULES", "PROBES", "ResidualBlock", "FeatureTextureTransfer", "FeatureESPCN", "NearestFeatureUp",
           "ExtendedPyramid", "EFPNRoIHeads", "EFPN", "efpn", "match_size", "extension_shapes", "extension_maps"]

SR_MODULES = ("ftt", "espcn", "nearest")
DISTILL_LOSSES = ("fbb", "global", "none")
EXTENDED_SOURCES = ("efpn", "teacher")
PROBES = ("p3", "p3_2x", "p3_extended")
EXTENDED_KEY = "e"  # P'2 in the feature dict, before FPN's "0" (P2) .. "3" (P5), "pool" (P6)
EXTENDED_STRIDE = 2.0


def match_size(x: Tensor, size: Sequence[int]) -> Tensor:
    """``x [B, C, h, w]`` cropped at the bottom / right, or padded there by repeating its edge, to ``size``."""
    height, width = int(size[0]), int(size[1])
    x = x[..., :height, :width]
    pad_h, pad_w = height - x.shape[-2], width - x.shape[-1]
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    return x


class ResidualBlock(nn.Module):
    """``x + conv3x3(relu(conv3x3(x)))``, ``Tensor[B, C, H, W]`` -> same shape (no normalisation, as SR networks)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class SubPixelUp(nn.Module):
    """Sub-pixel convolution, x2: ``conv3x3(C -> 4C)`` then ``nn.PixelShuffle(2)``: ``[B, C, H, W] -> [B, C, 2H, 2W]``.

    torch's ``PixelShuffle(r)`` reads input channel ``c r^2 + i r + j`` into output pixel ``(r y + i, r x + j)`` of
    channel ``c``: the ``r^2`` channels of one output channel are consecutive, row offset ``i`` first."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, 4 * channels, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: Tensor) -> Tensor:
        return self.shuffle(self.conv(x))


class FeatureTextureTransfer(nn.Module):
    """FTT (eq. 3): ``P'3 = E_t(P2 || up(E_c(P3))) + up(E_c(P3))``; ``(P3 [B, C, h, w], P2 [B, C, H, W]) ->
    P'3 [B, C, H, W]``. ``E_t`` starts with a 3x3 convolution from ``2C`` to ``C`` channels, then its two blocks."""

    def __init__(self, channels: int, blocks: int = 2):
        super().__init__()
        self.content = nn.Sequential(*[ResidualBlock(channels) for _ in range(blocks)])
        self.up = SubPixelUp(channels)
        self.texture = nn.Sequential(nn.Conv2d(2 * channels, channels, 3, padding=1), nn.ReLU(inplace=True),
                                     *[ResidualBlock(channels) for _ in range(blocks)])

    def forward(self, p3: Tensor, p2: Tensor) -> Tensor:
        content = match_size(self.up(self.content(p3)), p2.shape[-2:])
        return self.texture(torch.cat([p2, content], dim=1)) + content


class FeatureESPCN(nn.Module):
    """The ablation's three-layer ESPCN on ``P3`` alone: ``conv5x5 -> tanh -> conv3x3 -> tanh -> conv3x3 (4C) ->
    PixelShuffle(2)`` (Shi et al., 2016, with the pyramid's channels); ``P2`` is only read for its size."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 5, padding=2), nn.Tanh(),
                                  nn.Conv2d(channels, channels, 3, padding=1), nn.Tanh())
        self.up = SubPixelUp(channels)

    def forward(self, p3: Tensor, p2: Tensor) -> Tensor:
        return match_size(self.up(self.body(p3)), p2.shape[-2:])


class NearestFeatureUp(nn.Module):
    """The ablation without FTT: ``P'3 = nearest_up(P3)`` (no parameters)."""

    def forward(self, p3: Tensor, p2: Tensor) -> Tensor:
        return match_size(F.interpolate(p3, scale_factor=2.0, mode="nearest"), p2.shape[-2:])


def _sr_module(name: str, channels: int) -> nn.Module:
    if name not in SR_MODULES:
        raise ValueError(f"sr_module={name!r} is unknown; choose one of {', '.join(SR_MODULES)} "
                         "(ftt: EFPN's feature texture transfer; espcn and nearest: the paper's ablations)")
    return {"ftt": FeatureTextureTransfer, "espcn": FeatureESPCN, "nearest": lambda _: NearestFeatureUp()}[name](channels)


class ExtendedPyramid(nn.Module):
    """FPN's backbone (``body``, ``fpn``: the same parameter names as the baseline's, so its weights load) plus
    ``C'2``, ``lateral`` and the SR module. ``forward(x [B, 3, H, W])`` -> ``(features, extension)``: ``features``
    the ordered dict ``{"e": P'2, "0": P2, ..., "pool": P6}``, ``extension`` ``{"p3": P'3, "c2": C'2}``."""

    def __init__(self, backbone: nn.Module, sr_module: str = "ftt"):
        super().__init__()
        body = getattr(backbone, "body", None)
        if body is None or not hasattr(backbone, "fpn") or not hasattr(body, "layer1"):
            raise ValueError("EFPN needs a ResNet with a feature pyramid (it runs stage 2 again at twice the "
                             "resolution); fix: backbone = resnet_tiny, resnet_narrow or resnet18..resnet101, fpn = true")
        self.body, self.fpn, self.out_channels = body, backbone.fpn, backbone.out_channels
        self.narrow_stem = hasattr(body, "stem")
        if not self.narrow_stem and not hasattr(body, "maxpool"):
            raise ValueError("EFPN's C'2 removes the stride-2 step in front of stage 2 (ResNet's max-pool); this "
                             "backbone has none; fix: use a ResNet backbone")
        c2_lateral = self.fpn.inner_blocks[0][0]
        self.lateral = nn.Conv2d(c2_lateral.in_channels, c2_lateral.out_channels, 1)
        with torch.no_grad():  # start from FPN's own C2 lateral
            self.lateral.weight.copy_(c2_lateral.weight)
            self.lateral.bias.copy_(c2_lateral.bias)
        self.sr = _sr_module(sr_module, self.out_channels)
        self.sr_name = sr_module
        self.frozen = False  # stage 2/3: the backbone and FPN run without gradients

    def stem(self, x: Tensor, twice: bool = True) -> tuple[Tensor, Tensor | None]:
        """``(s, s')``: the input of stage 2 (stride 4) and, with ``twice``, the same at stride 2 (the last
        stride-2 step skipped); ``s'`` is None without ``twice``."""
        if self.narrow_stem:
            stem = self.body.stem
            first = stem[2](stem[1](stem[0](x)))
            second = stem[3]
            regular = stem[5](stem[4](second(first)))
            if not twice:
                return regular, None
            doubled = F.conv2d(first, second.weight, second.bias, stride=1, padding=second.padding)
            return regular, stem[5](stem[4](doubled))
        body = self.body
        first = body.relu(body.bn1(body.conv1(x)))
        return body.maxpool(first), first if twice else None

    def pyramid(self, x: Tensor) -> tuple["OrderedDict[str, Tensor]", Tensor]:
        """FPN's levels of ``x`` and ``C'2``."""
        regular, twice = self.stem(x)
        return self._top_down(self.body.layer1(regular)), self.body.layer1(twice)

    def fpn_levels(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        """FPN's levels alone (the teacher's pass on the 2x input: no ``C'2``)."""
        regular, _ = self.stem(x, twice=False)
        return self._top_down(self.body.layer1(regular))

    def _top_down(self, c2: Tensor) -> "OrderedDict[str, Tensor]":
        c3 = self.body.layer2(c2)
        c4 = self.body.layer3(c3)
        return self.fpn(OrderedDict([("0", c2), ("1", c3), ("2", c4), ("3", self.body.layer4(c4))]))

    def extend(self, levels: "OrderedDict[str, Tensor]", c2_twice: Tensor) -> tuple[Tensor, Tensor]:
        """``(P'2, P'3)`` from FPN's levels and ``C'2`` (eq. 1 and 3)."""
        p3_extended = self.sr(levels["1"], levels["0"])
        lateral = self.lateral(c2_twice)
        up = match_size(F.interpolate(p3_extended, scale_factor=2.0, mode="nearest"), lateral.shape[-2:])
        return up + lateral, p3_extended

    def forward(self, x: Tensor) -> tuple["OrderedDict[str, Tensor]", dict[str, Tensor]]:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            levels, c2_twice = self.pyramid(x)
        p2_extended, p3_extended = self.extend(levels, c2_twice)
        features = OrderedDict([(EXTENDED_KEY, p2_extended), *levels.items()])
        return features, {"p3": p3_extended, "c2": c2_twice}


class EFPNRoIHeads(RoIHeads):
    """torchvision's ``RoIHeads`` with RoIs split by size: sides under ``threshold`` pooled from ``P'2`` (stride 2,
    7 x 7 RoIAlign, sampling ratio 2) and classified by ``small_box_head`` / ``small_box_predictor`` when there is
    one (stage 3), else by the original head; the rest as FPN. Outputs are put back in proposal order, so the
    decoding, score threshold and per-class NMS are torchvision's and merge the two heads' boxes."""

    def __init__(self, base: RoIHeads, threshold: float, *, separate_head: bool = False, ohem_batch_size: int = 64):
        super().__init__(base.box_roi_pool, base.box_head, base.box_predictor, base.proposal_matcher.high_threshold,
                         base.proposal_matcher.low_threshold, base.fg_bg_sampler.batch_size_per_image,
                         base.fg_bg_sampler.positive_fraction, base.box_coder.weights, base.score_thresh,
                         base.nms_thresh, base.detections_per_img)
        self.threshold = float(threshold)
        self.small_box_head = self.small_box_predictor = None
        if separate_head:
            import copy

            self.small_box_head = copy.deepcopy(base.box_head)
            self.small_box_predictor = copy.deepcopy(base.box_predictor)
        self.ohem_batch_size = int(ohem_batch_size)
        self.keep_all = BalancedPositiveNegativeSampler(1 << 30, 1.0)
        self.train_small_head_only = False
        self.probe: str | None = None

    def is_small(self, boxes: Tensor) -> Tensor:
        """``Tensor[N]`` bool: ``sqrt(w h) < threshold``."""
        return torch.sqrt(box_area(boxes).clamp(min=0)) < self.threshold

    def _small_outputs(self, extended: Tensor, boxes: list[Tensor]) -> tuple[Tensor, Tensor]:
        pooled = roi_align(extended, boxes, output_size=7, spatial_scale=1.0 / EXTENDED_STRIDE, sampling_ratio=2)
        head = self.small_box_head if self.small_box_head is not None else self.box_head
        predictor = self.small_box_predictor if self.small_box_predictor is not None else self.box_predictor
        return predictor(head(pooled))

    def box_outputs(self, features: dict[str, Tensor], proposals: list[Tensor], image_shapes) -> tuple[Tensor, Tensor]:
        """``(class_logits [R, K+1], box_regression [R, 4 (K+1)])`` for the proposals of all images, in order."""
        if self.probe is not None:
            pooled = roi_align(features["probe"], proposals, output_size=7, spatial_scale=1.0 / features["probe_stride"],
                               sampling_ratio=2)
            return self.box_predictor(self.box_head(pooled))
        small = [self.is_small(p) for p in proposals]
        flags = torch.cat(small) if small else torch.zeros(0, dtype=torch.bool)
        count = int(flags.numel())
        num_outputs = self.box_predictor.cls_score.out_features
        reference = features[EXTENDED_KEY]
        logits = reference.new_zeros(count, num_outputs)
        deltas = reference.new_zeros(count, 4 * num_outputs)
        if bool((~flags).any()):
            pooled = self.box_roi_pool(features, [p[~s] for p, s in zip(proposals, small)], image_shapes)
            large_logits, large_deltas = self.box_predictor(self.box_head(pooled))
            logits, deltas = logits.index_put((~flags,), large_logits), deltas.index_put((~flags,), large_deltas)
        if bool(flags.any()):
            small_logits, small_deltas = self._small_outputs(reference, [p[s] for p, s in zip(proposals, small)])
            logits, deltas = logits.index_put((flags,), small_logits), deltas.index_put((flags,), small_deltas)
        return logits, deltas

    def small_head_losses(self, features: dict[str, Tensor], proposals: list[Tensor], targets) -> dict[str, Tensor]:
        """Stage 3: cross-entropy + smooth-L1 (beta 1/9, the true class's box) of every proposal under the threshold
        (ground-truth boxes included); the mean over the ``ohem_batch_size`` hardest of each image."""
        sampler, self.fg_bg_sampler = self.fg_bg_sampler, self.keep_all
        try:
            proposals, _, labels, regression_targets = self.select_training_samples(proposals, targets)
        finally:
            self.fg_bg_sampler = sampler
        small = [self.is_small(p) for p in proposals]
        boxes = [p[s] for p, s in zip(proposals, small)]
        labels = torch.cat([l[s] for l, s in zip(labels, small)])
        targets_small = torch.cat([t[s] for t, s in zip(regression_targets, small)])
        reference = features[EXTENDED_KEY]
        if labels.numel() == 0:
            zero = sum(p.sum() for p in self.small_box_predictor.parameters()) * 0.0
            return {"loss_classifier": zero, "loss_box_reg": zero}
        logits, deltas = self._small_outputs(reference, boxes)
        images = torch.cat([torch.full((len(b),), i, device=labels.device) for i, b in enumerate(boxes)])
        classification = F.cross_entropy(logits, labels, reduction="none")
        per_class = deltas.reshape(len(labels), -1, 4)[torch.arange(len(labels)), labels]
        box = torch.where(labels > 0, F.smooth_l1_loss(per_class, targets_small, beta=1 / 9, reduction="none").sum(1), 0.0)
        keep = ohem_select(classification + box, images, self.ohem_batch_size)
        count = max(len(keep), 1)
        return {"loss_classifier": classification[keep].sum() / count, "loss_box_reg": box[keep].sum() / count}

    def forward(self, features, proposals, image_shapes, targets=None):
        if self.training:
            if self.train_small_head_only:
                return [], self.small_head_losses(features, proposals, targets)
            proposals, _, labels, regression_targets = self.select_training_samples(proposals, targets)
            logits, deltas = self.box_outputs(features, proposals, image_shapes)
            classification, box = fastrcnn_loss(logits, deltas, labels, regression_targets)
            return [], {"loss_classifier": classification, "loss_box_reg": box}
        logits, deltas = self.box_outputs(features, proposals, image_shapes)
        boxes, scores, labels = self.postprocess_detections(logits, deltas, proposals, image_shapes)
        return [{"boxes": b, "scores": s, "labels": l} for b, s, l in zip(boxes, scores, labels)], {}


class EFPN(GeneralizedRCNN):
    """Faster R-CNN with EFPN (module docstring). Built from an FPN baseline whose parameter names it keeps, so the
    baseline's checkpoint loads into it (:meth:`load_baseline`)."""

    def __init__(self, base: FasterRCNN, *, sr_module: str = "ftt", extended_threshold: float,
                 extended_anchor_sizes: Sequence[float] | None = None, stage: int = 2, distill_loss: str = "fbb",
                 fbb_lambda: float = 1.0, distill_p3: bool = True, detection_loss: bool = False,
                 ohem_batch_size: int = 64, extended_source: str = "efpn", probe: str | None = None):
        backbone = ExtendedPyramid(base.backbone, sr_module)
        generator = base.rpn.anchor_generator
        sizes = [tuple(level) for level in generator.sizes]
        extended_sizes = tuple(extended_anchor_sizes) if extended_anchor_sizes is not None else tuple(s / 2 for s in sizes[0])
        if len(extended_sizes) != len(sizes[0]):
            raise ValueError(f"extended_anchor_sizes={list(extended_sizes)} must have as many sizes as every other level "
                             f"({len(sizes[0])}; the RPN head is shared)")
        rpn = base.rpn
        rpn.anchor_generator = SodlibAnchorGenerator((extended_sizes, *sizes), generator.aspect_ratios[0],
                                                     offset=getattr(generator, "offset", 0.0))
        heads = EFPNRoIHeads(base.roi_heads, extended_threshold, separate_head=stage == 3, ohem_batch_size=ohem_batch_size)
        super().__init__(backbone, rpn, heads, base.transform)
        self.stage, self.distill_loss, self.fbb_lambda = stage, distill_loss, float(fbb_lambda)
        self.distill_p3, self.detection_loss, self.extended_source = distill_p3, detection_loss, extended_source
        self.probe = probe
        heads.probe = probe
        heads.train_small_head_only = stage == 3
        backbone.frozen = True
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        trainable = [backbone.lateral, backbone.sr] if stage == 2 else [heads.small_box_head, heads.small_box_predictor]
        for module in trainable:
            for parameter in module.parameters():
                parameter.requires_grad_(True)

    def train(self, mode: bool = True) -> "EFPN":
        """Train mode everywhere but the frozen backbone, whose batch norm keeps the baseline's statistics."""
        super().train(mode)
        self.backbone.body.eval()
        return self

    def load_baseline(self, state_dict: dict[str, Tensor]) -> None:
        """Load an FPN baseline's (or a stage-2 EFPN's) weights; what they lack (the extension, the ``P'2`` head)
        keeps its initialisation, the ``P'2`` head copied from the original head. Any other mismatch is an error."""
        missing, unexpected = self.load_state_dict(state_dict, strict=False)
        new_parts = ("backbone.lateral.", "backbone.sr.", "roi_heads.small_box_head.", "roi_heads.small_box_predictor.")
        wrong = [k for k in missing if not k.startswith(new_parts)] + list(unexpected)
        if wrong:
            raise ValueError(f"these weights are not an FPN baseline of this EFPN (same backbone, channels, classes): "
                             f"{', '.join(wrong[:6])}{' ...' if len(wrong) > 6 else ''}")
        heads = self.roi_heads
        if heads.small_box_head is not None and any(k.startswith("roi_heads.small_box_head.") for k in missing):
            heads.small_box_head.load_state_dict(heads.box_head.state_dict())
            heads.small_box_predictor.load_state_dict(heads.box_predictor.state_dict())

    def teacher_levels(self, tensors: Tensor) -> "OrderedDict[str, Tensor]":
        """The frozen FPN's levels of the batch upsampled 2x (bilinear), without gradients: the teacher."""
        with torch.no_grad():
            upsampled = F.interpolate(tensors, scale_factor=2.0, mode="bilinear", align_corners=False)
            return self.backbone.fpn_levels(upsampled)

    def distillation_losses(self, features: dict[str, Tensor], extension: dict[str, Tensor], teacher: dict[str, Tensor],
                            boxes: list[Tensor]) -> dict[str, Tensor]:
        """``{"loss_distill_p2", "loss_distill_p3"}``: :func:`fbb_loss` of ``P'2`` against the teacher's ``P2``
        (stride 2 in the 1x image) and of ``P'3`` against its ``P3`` (stride 4)."""
        lam = self.fbb_lambda if self.distill_loss == "fbb" else 0.0
        pairs = [("p2", features[EXTENDED_KEY], teacher["0"], 2.0)]
        if self.distill_p3:
            pairs.append(("p3", extension["p3"], teacher["1"], 4.0))
        return {f"loss_distill_{name}": fbb_loss(student, match_size(target, student.shape[-2:]), boxes, lam, stride=stride)
                for name, student, target, stride in pairs}

    def features(self, tensors: Tensor) -> tuple["OrderedDict[str, Tensor]", dict[str, Tensor]]:
        """The extended pyramid of a padded batch (``extended_source``, ``probe`` applied)."""
        features, extension = self.backbone(tensors)
        teacher = None
        if self.extended_source == "teacher" or self.probe == "p3_2x":
            teacher = self.teacher_levels(tensors)
        if self.extended_source == "teacher":
            features[EXTENDED_KEY] = match_size(teacher["0"], features[EXTENDED_KEY].shape[-2:])
            extension["p3"] = match_size(teacher["1"], extension["p3"].shape[-2:])
        if self.probe is not None:
            features["probe"], features["probe_stride"] = {"p3": (features["1"], 8.0), "p3_2x": (teacher["1"] if teacher else None, 4.0),
                                                           "p3_extended": (extension["p3"], 4.0)}[self.probe]
        return features, extension

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None):
        if self.training and targets is None:
            raise ValueError("in training mode EFPN needs targets (boxes and labels per image)")
        original_sizes = [tuple(image.shape[-2:]) for image in images]
        image_list, targets = self.transform(images, targets)
        features, extension = self.features(image_list.tensors)
        if self.training:
            losses: dict[str, Tensor] = {}
            if self.stage == 2 and self.distill_loss != "none":
                teacher = self.teacher_levels(image_list.tensors)
                losses.update(self.distillation_losses(features, extension, teacher, [t["boxes"] for t in targets]))
            if self.stage == 3 or self.detection_loss:
                rpn_features = OrderedDict((k, v) for k, v in features.items() if not k.startswith("probe"))
                proposals, rpn_losses = self.rpn(image_list, rpn_features, targets)
                _, head_losses = self.roi_heads(features, proposals, image_list.image_sizes, targets)
                losses.update(head_losses)
                if self.stage == 2:
                    losses.update(rpn_losses)
            return losses
        rpn_features = OrderedDict((k, v) for k, v in features.items() if not k.startswith("probe"))
        proposals, _ = self.rpn(image_list, rpn_features)
        detections, _ = self.roi_heads(features, proposals, image_list.image_sizes)
        return self.transform.postprocess(detections, image_list.image_sizes, original_sizes)


def _check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is unknown; choose one of {', '.join(map(repr, choices))}")


# what **fpn_options may hold: faster_rcnn's own named options and the torchvision options it passes on
_FPN_OPTIONS = tuple(p for p in inspect.signature(faster_rcnn).parameters if p not in ("num_classes", "backbone",
                                                                                       "detector_options"))


@register_model("efpn", extra_options=(*_FPN_OPTIONS, *DETECTOR_OPTIONS))
def efpn(num_classes: int, backbone: str = "resnet_narrow", *, sr_module: str = "ftt",
         extended_threshold: float | None = None, extended_anchor_sizes: Sequence[float] | None = None, stage: int = 2,
         distill_loss: str = "fbb", fbb_lambda: float = 1.0, distill_p3: bool = True, detection_loss: bool = False,
         ohem_batch_size: int = 64, extended_source: str = "efpn", probe: str | None = None,
         **fpn_options: Any) -> EFPN:
    """Faster R-CNN with EFPN, an extended pyramid level at stride 2 (Deng et al., 2021; module docstring).

    ``fpn_options`` are :func:`sodlib.models.faster_rcnn`'s (the baseline whose weights stage 2 starts from must be
    built with the same ones).

    Args:
        sr_module: ``"ftt"`` (EFPN), ``"espcn"`` or ``"nearest"`` (the ablations).
        extended_threshold: RoI side (pixels of the resized image) under which a RoI is pooled from ``P'2``;
            default ``56 * min_size / 1400`` (:func:`sodlib.pyramid_levels.default_extended_threshold`).
        extended_anchor_sizes: the RPN's anchor sizes on ``P'2`` (default: half of ``P2``'s).
        stage: 2 (train the extension by distillation, shared head) or 3 (train a ``P'2`` head with OHEM).
        distill_loss: ``"fbb"`` (global L1 + ``fbb_lambda`` x L1 on object cells), ``"global"``, or ``"none"``.
        fbb_lambda: the weight of the object term, ``>= 0``.
        distill_p3: also distil ``P'3`` towards the teacher's ``P3`` (the paper's dual supervision).
        detection_loss: stage 2 also back-propagates the detector's losses through the frozen heads.
        ohem_batch_size: stage 3's RoIs per image (the hardest).
        extended_source: ``"efpn"``, or ``"teacher"`` for the oracle (the 2x input's ``P2`` as ``P'2``).
        probe: ``None``, or pool every RoI from ``"p3"``, ``"p3_2x"`` or ``"p3_extended"`` (Table V).
    """
    _check_choice("sr_module", sr_module, SR_MODULES)
    _check_choice("distill_loss", distill_loss, DISTILL_LOSSES)
    _check_choice("extended_source", extended_source, EXTENDED_SOURCES)
    _check_choice("probe", probe, (None, *PROBES))
    _check_choice("stage", stage, (2, 3))
    if isinstance(fbb_lambda, bool) or not isinstance(fbb_lambda, (int, float)) or not math.isfinite(fbb_lambda) or fbb_lambda < 0:
        raise ValueError(f"fbb_lambda={fbb_lambda!r} must be a number >= 0 (the paper uses 1)")
    for name, value in (("distill_p3", distill_p3), ("detection_loss", detection_loss)):
        if not isinstance(value, bool):
            raise ValueError(f"{name}={value!r} must be true or false")
    if stage == 2 and distill_loss == "none" and not detection_loss:
        raise ValueError("stage 2 with distill_loss='none' and detection_loss=false has nothing to learn from; "
                         "fix: distill_loss='fbb' (EFPN) or detection_loss=true (the extended level alone)")
    if isinstance(ohem_batch_size, bool) or not isinstance(ohem_batch_size, int) or ohem_batch_size < 1:
        raise ValueError(f"ohem_batch_size={ohem_batch_size!r} must be a positive integer")
    if fpn_options.get("fpn", True) is not True:
        raise ValueError("EFPN extends a feature pyramid; fix: fpn = true")
    if backbone not in (*NARROW_RESNETS, *TORCHVISION_RESNETS):
        raise ValueError(f"backbone={backbone!r}: EFPN needs a ResNet with a feature pyramid (it runs stage 2 again at "
                         f"twice the resolution); fix: backbone = one of {', '.join((*NARROW_RESNETS, *TORCHVISION_RESNETS))}")
    base = faster_rcnn(num_classes, backbone, **fpn_options)
    min_size = base.transform.min_size[0]
    threshold = default_extended_threshold(min_size) if extended_threshold is None else extended_threshold
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold > 0:
        raise ValueError(f"extended_threshold={extended_threshold!r} must be a positive RoI side in pixels")
    model = EFPN(base, sr_module=sr_module, extended_threshold=float(threshold), extended_anchor_sizes=extended_anchor_sizes,
                 stage=stage, distill_loss=distill_loss, fbb_lambda=fbb_lambda, distill_p3=distill_p3,
                 detection_loss=detection_loss, ohem_batch_size=ohem_batch_size, extended_source=extended_source, probe=probe)
    model.build_options = {**base.build_options, "name": "efpn", "sr_module": sr_module,
                           "extended_threshold": extended_threshold,
                           "extended_anchor_sizes": list(extended_anchor_sizes) if extended_anchor_sizes is not None else None,
                           "stage": stage, "distill_loss": distill_loss, "fbb_lambda": float(fbb_lambda),
                           "distill_p3": distill_p3, "detection_loss": detection_loss, "ohem_batch_size": ohem_batch_size,
                           "extended_source": extended_source, "probe": probe}
    return model


def extension_shapes(model: EFPN, images: list[Tensor]) -> "OrderedDict[str, tuple[int, ...]]":
    """The shape of every tensor on EFPN's path for a batch of images (input resized and padded, ``C2 .. C5``,
    ``C'2``, ``P2 .. P6``, FTT's inner tensors when the SR module is FTT, ``P'3``, ``lateral(C'2)``, ``P'2``)."""
    backbone = model.backbone
    shapes: OrderedDict[str, tuple[int, ...]] = OrderedDict()
    with torch.no_grad():
        image_list, _ = model.transform(images)
        x = image_list.tensors
        shapes["input (resized, padded)"] = tuple(x.shape)
        regular, twice = backbone.stem(x)
        c2 = backbone.body.layer1(regular)
        c3 = backbone.body.layer2(c2)
        c4 = backbone.body.layer3(c3)
        c5 = backbone.body.layer4(c4)
        c2_twice = backbone.body.layer1(twice)
        for name, tensor in (("C2", c2), ("C3", c3), ("C4", c4), ("C5", c5), ("C'2 (stage 2 at stride 2)", c2_twice)):
            shapes[name] = tuple(tensor.shape)
        levels = backbone.fpn(OrderedDict([("0", c2), ("1", c3), ("2", c4), ("3", c5)]))
        for key, name in zip(levels, ("P2", "P3", "P4", "P5", "P6 (pool)")):
            shapes[name] = tuple(levels[key].shape)
        sr = backbone.sr
        if isinstance(sr, FeatureTextureTransfer):
            content = sr.content(levels["1"])
            widened = sr.up.conv(content)
            shuffled = match_size(sr.up.shuffle(widened), levels["0"].shape[-2:])
            shapes["E_c(P3)"] = tuple(content.shape)
            shapes["conv to 4C (sub-pixel)"] = tuple(widened.shape)
            shapes["PixelShuffle(2)"] = tuple(shuffled.shape)
            shapes["P2 || up(E_c(P3))"] = tuple(torch.cat([levels["0"], shuffled], dim=1).shape)
        p2_extended, p3_extended = backbone.extend(levels, c2_twice)
        shapes["P'3"] = tuple(p3_extended.shape)
        shapes["lateral(C'2)"] = tuple(backbone.lateral(c2_twice).shape)
        shapes["P'2 = up(P'3) + lateral(C'2)"] = tuple(p2_extended.shape)
    return shapes


def extension_maps(model: EFPN, image: Tensor) -> dict[str, Tensor]:
    """For one image ``Tensor[3, H, W]``: ``{"p2", "p3", "p2_extended", "p3_extended", "teacher_p2", "teacher_p3"}``
    (each ``Tensor[C, h, w]``, the teacher's on the 2x input) and ``"scale"``, the resize factor of the image."""
    with torch.no_grad():
        image_list, _ = model.transform([image])
        features, extension = model.backbone(image_list.tensors)
        teacher = model.teacher_levels(image_list.tensors)
    resized = image_list.image_sizes[0]
    return {"p2": features["0"][0], "p3": features["1"][0], "p2_extended": features[EXTENDED_KEY][0],
            "p3_extended": extension["p3"][0], "teacher_p2": match_size(teacher["0"], features[EXTENDED_KEY].shape[-2:])[0],
            "teacher_p3": match_size(teacher["1"], extension["p3"].shape[-2:])[0],
            "scale": torch.tensor(resized[0] / image.shape[-2])}
