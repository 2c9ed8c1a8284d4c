"""A small classifier of object crops, for re-scoring a detector's small detections (Krishna and Jawahar 2017).

``CropClassifier(num_classes)`` maps ``Tensor[B, 3, N, N]`` (RGB in ``[0, 1]``, an upscaled crop) to logits
``Tensor[B, num_classes + 1]``, class 0 being "no object". Five 3x3 convolution stages (16, 32, 64, 96, 128 maps,
batch norm, ReLU); the first keeps the input's resolution, the next four halve it (stride 2), then a global
average and a linear layer. The first stage works at the full upscaled size on purpose: a classifier that halved
the size at once would throw away what an upsampler adds.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CropClassifier"]


def _stage(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class CropClassifier(nn.Module):
    """``forward(Tensor[B, 3, N, N]) -> Tensor[B, num_classes + 1]`` logits (see the module docstring)."""

    def __init__(self, num_classes: int, widths: tuple[int, ...] = (16, 32, 64, 96, 128)) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes={num_classes} must be >= 1 (object categories, without the background)")
        self.num_classes = num_classes
        stages, c_in = [], 3
        for k, width in enumerate(widths):
            stages.append(_stage(c_in, width, 1 if k == 0 else 2))
            c_in = width
        self.features = nn.Sequential(*stages)
        self.head = nn.Linear(c_in, num_classes + 1)

    def forward(self, crops: Tensor) -> Tensor:
        if crops.dim() != 4 or crops.shape[1] != 3:
            raise ValueError(f"crops must be Tensor[B, 3, N, N], got {tuple(crops.shape)}")
        pooled = F.adaptive_avg_pool2d(self.features(crops), 1).flatten(1)
        return self.head(pooled)
