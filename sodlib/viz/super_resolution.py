"""Figures of upscaled object crops: the low-resolution crop, each upscaling and the high-resolution reference."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from torch import Tensor

__all__ = ["plot_upscaling_grid", "UpscalingReport", "upscaling_view"]


def _as_image(crop: Tensor):
    """``Tensor[3, H, W]`` (float in [0, 1] or uint8) -> ``numpy [H, W, 3]`` float in [0, 1] for ``imshow``."""
    crop = crop.detach().cpu()
    crop = crop.float() / 255.0 if not crop.is_floating_point() else crop.float()
    return crop.clamp(0, 1).permute(1, 2, 0).numpy()


def plot_upscaling_grid(lr: Tensor, upscaled: Mapping[str, Tensor], hr: Tensor | None = None,
                        scores: Mapping[str, Sequence[float]] | None = None, row_labels: Sequence[str] | None = None,
                        cell_inches: float = 1.6) -> Figure:
    """One row per crop: the low-resolution crop (nearest-neighbour enlarged by ``imshow``), each upscaling in
    ``upscaled`` (name -> ``Tensor[N, 3, sH, sW]``) and the reference ``hr`` (``Tensor[N, 3, sH, sW]``).

    ``lr``: ``Tensor[N, 3, H, W]``; ``scores`` (name -> N numbers, e.g. PSNR) are printed under the crops;
    ``row_labels`` (N strings) name the rows. Every crop is shown at the same size, so pixels of the
    low-resolution crop show as ``s x s`` blocks.
    """
    count = int(lr.shape[0])
    if count == 0:
        raise ValueError("no crops to show")
    for name, images in upscaled.items():
        if int(images.shape[0]) != count:
            raise ValueError(f"upscaled[{name!r}] has {images.shape[0]} crops, lr has {count}")
    if hr is not None and int(hr.shape[0]) != count:
        raise ValueError(f"hr has {hr.shape[0]} crops, lr has {count}")
    columns = [("low resolution", lr)] + list(upscaled.items()) + ([("high resolution", hr)] if hr is not None else [])
    figure, axes = plt.subplots(count, len(columns), figsize=(cell_inches * len(columns), cell_inches * count + 0.4),
                                squeeze=False)
    for row in range(count):
        for column, (name, images) in enumerate(columns):
            ax = axes[row][column]
            ax.imshow(_as_image(images[row]), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=9)
            if scores is not None and name in scores:
                ax.set_xlabel(f"{float(scores[name][row]):.2f}", fontsize=8)
            if column == 0 and row_labels is not None:
                ax.set_ylabel(row_labels[row], fontsize=8)
    figure.tight_layout()
    return figure


@dataclass
class UpscalingReport:
    """What the SR explorer shows beside its pictures."""

    index: int
    scale: int
    method: str
    psnr: float
    ssim: float
    psnr_bicubic: float
    label: str | None = None
    side: float | None = None
    score: float | None = None

    def summary(self) -> str:
        what = f"crop {self.index}" + (f" ({self.label}" + (f", side {self.side:.1f} px" if self.side else "") + ")" if self.label else "")
        lines = [f"{what}, x{self.scale}, {self.method}: PSNR {self.psnr:.2f} dB (bicubic {self.psnr_bicubic:.2f} dB, "
                 f"{self.psnr - self.psnr_bicubic:+.2f}), SSIM {self.ssim:.4f}"]
        if self.score is not None:
            lines.append(f"classifier's probability of the true class on this upscaling: {self.score:.3f}")
        return "\n".join(lines)


def upscaling_view(lr: Tensor, upscaled: Tensor, hr: Tensor, report: UpscalingReport) -> tuple[Figure, UpscalingReport]:
    """Three panels of one crop: low resolution (``Tensor[3, h, w]``, shown in ``s x s`` blocks), the upscaling
    (``Tensor[3, sh, sw]``) and the high-resolution reference; titles carry the report's figures."""
    figure, axes = plt.subplots(1, 3, figsize=(7.5, 2.8))
    titles = [f"low resolution ({lr.shape[-1]} px)", f"{report.method} x{report.scale}: {report.psnr:.2f} dB",
              f"high resolution ({hr.shape[-1]} px)"]
    for ax, crop, title in zip(axes, (lr, upscaled, hr), titles):
        ax.imshow(_as_image(crop), interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    figure.tight_layout()
    return figure, report
