"""The horizontal flip of training, decided per item by a seed, so that a run and its resumption flip alike."""
from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset

__all__ = ["HorizontalFlipView"]


class HorizontalFlipView(Dataset):
    """``dataset`` with each item flipped left-right with probability 1/2, decided by ``(seed, epoch, index)``.

    A flip maps a box ``(x1, y1, x2, y2)`` of an image ``W`` pixels wide to ``(W - x2, y1, W - x1, y2)``
    (masks are flipped along their last axis).
    """

    def __init__(self, dataset: Dataset, seed: int, epoch: int, enabled: bool = True):
        self.dataset, self.seed, self.epoch, self.enabled = dataset, int(seed), int(epoch), bool(enabled)

    def __len__(self) -> int:
        return len(self.dataset)

    def flips(self, index: int) -> bool:
        """Whether item ``index`` is flipped in this epoch."""
        return self.enabled and bool(np.random.default_rng([self.seed, self.epoch, int(index)]).random() < 0.5)

    def __getitem__(self, index: int):
        image, target = self.dataset[index]
        if not self.flips(index):
            return image, target
        width = image.shape[-1]
        target = dict(target)
        boxes = target["boxes"].clone()
        boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
        target["boxes"] = boxes
        if "masks" in target:
            target["masks"] = target["masks"].flip(-1)
        return image.flip(-1), target
