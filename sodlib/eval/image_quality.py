"""PSNR and SSIM of upscaled crops against their high-resolution reference, with the border and channel stated.

Both take ``Tensor[B, 3, H, W]`` in ``[0, 1]`` (the prediction is clamped to ``[0, 1]`` first, as it would be
when saved as an image), leave out ``shave`` pixels on every side, and return one value per image
(``Tensor[B]``); a table reports their mean and spread. ``channel="rgb"`` measures the three channels
(the default: detectors see RGB); ``channel="y"`` the luma of ITU-R BT.601 on the studio range, as most SR
papers report::

    Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255        (R, G, B in [0, 1])

    PSNR = 10 log10(1 / MSE),   MSE = mean over the shaved crop (and channels) of (pred - ref)^2

SSIM is Wang et al.'s (2004): an 11 x 11 Gaussian window of sigma 1.5, ``C1 = (0.01)^2``, ``C2 = (0.03)^2``,
averaged over the window positions that lie wholly inside the shaved crop (a 'valid' filter, as Wang et al.'s
reference code) and over the channels. Both are computed by ``torchmetrics`` (``peak_signal_noise_ratio``, ``structural_similarity_index_measure``); the tests hold them to
the formulas.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

__all__ = ["CHANNELS", "psnr", "ssim", "to_luma", "shave_border", "per_crop_quality", "compare_upscalers", "UpscalingCases"]

CHANNELS = ("rgb", "y")
_LUMA = (65.481, 128.553, 24.966)
_SSIM_WINDOW = 11


def _check_pair(prediction: Tensor, reference: Tensor, shave: int) -> None:
    if prediction.shape != reference.shape or prediction.dim() != 4 or prediction.shape[1] != 3:
        raise ValueError(f"prediction {tuple(prediction.shape)} and reference {tuple(reference.shape)} must be the same "
                         "Tensor[B, 3, H, W]; fix: upscale the low-resolution crop by the pair's scale")
    if shave < 0 or 2 * shave >= min(prediction.shape[-2:]):
        raise ValueError(f"shave={shave} leaves nothing of a {prediction.shape[-2]} x {prediction.shape[-1]} crop")


def to_luma(images: Tensor) -> Tensor:
    """``Tensor[B, 3, H, W] -> Tensor[B, 1, H, W]``: BT.601 studio-range luma, in ``[16/255, 235/255]``."""
    weights = images.new_tensor(_LUMA).view(1, 3, 1, 1)
    return (16.0 + (images * weights).sum(dim=1, keepdim=True)) / 255.0


def shave_border(images: Tensor, shave: int) -> Tensor:
    """``images[..., shave:-shave, shave:-shave]`` (unchanged for ``shave = 0``)."""
    return images[..., shave:images.shape[-2] - shave, shave:images.shape[-1] - shave]


def _prepared(prediction: Tensor, reference: Tensor, shave: int, channel: str) -> tuple[Tensor, Tensor]:
    if channel not in CHANNELS:
        raise ValueError(f"channel={channel!r} must be one of {', '.join(CHANNELS)}")
    _check_pair(prediction, reference, shave)
    prediction = prediction.detach().float().clamp(0.0, 1.0)
    reference = reference.detach().float()
    if channel == "y":
        prediction, reference = to_luma(prediction), to_luma(reference)
    return shave_border(prediction, shave), shave_border(reference, shave)


def psnr(prediction: Tensor, reference: Tensor, shave: int = 0, channel: str = "rgb") -> Tensor:
    """``Tensor[B]``: PSNR in dB of each prediction against its reference (``10 log10(1 / MSE)``, data range 1)."""
    prediction, reference = _prepared(prediction, reference, shave, channel)
    return peak_signal_noise_ratio(prediction, reference, data_range=1.0, reduction="none", dim=(1, 2, 3))


def ssim(prediction: Tensor, reference: Tensor, shave: int = 0, channel: str = "rgb") -> Tensor:
    """``Tensor[B]``: SSIM of each prediction against its reference (Gaussian 11 x 11, sigma 1.5, data range 1)."""
    prediction, reference = _prepared(prediction, reference, shave, channel)
    if min(prediction.shape[-2:]) < 11:
        raise ValueError(f"a {prediction.shape[-2]} x {prediction.shape[-1]} crop after the shave is smaller than "
                         "SSIM's 11 x 11 window; fix: larger crops or a smaller shave")
    _, full = structural_similarity_index_measure(prediction, reference, data_range=1.0, reduction="none",
                                                  return_full_image=True)
    # torchmetrics pads by reflection and averages every pixel; Wang et al.'s reference keeps only the windows
    # that lie wholly inside the image (a 'valid' filter): the map without its 5-pixel rim
    return shave_border(full, _SSIM_WINDOW // 2).mean(dim=(1, 2, 3))


def per_crop_quality(pairs, method, channel: str = "rgb", batch_size: int = 64) -> dict[str, Tensor]:
    """``{"psnr": Tensor[N], "ssim": Tensor[N]}`` of ``method`` (an :data:`~sodlib.models.super_resolution.INTERPOLATIONS`
    name or an SR model) on every pair of an :class:`~sodlib.data.sr_pairs.SRPairs`, with its protocol's shave."""
    from sodlib.models.super_resolution import upscale

    scale, shave = pairs.protocol.scale, pairs.protocol.shave
    values: dict[str, list[Tensor]] = {"psnr": [], "ssim": []}
    for start in range(0, len(pairs), batch_size):
        lr, hr = pairs.batch(slice(start, start + batch_size))
        upscaled = upscale(lr, scale, method)
        values["psnr"].append(psnr(upscaled, hr, shave, channel))
        values["ssim"].append(ssim(upscaled, hr, shave, channel))
    return {name: torch.cat(parts) for name, parts in values.items()}


def compare_upscalers(pairs, methods: dict, channel: str = "rgb", batch_size: int = 64) -> dict:
    """Mean and standard deviation over the crops of PSNR and SSIM for each named method, with the protocol::

        {"crops": n, "scale": s, "channel": "rgb", "protocol": {...},
         "methods": {name: {"psnr": mean, "psnr_sd": sd, "ssim": mean, "ssim_sd": sd}}}
    """
    if len(pairs) == 0:
        raise ValueError("no crop pairs to measure; fix: data with objects in the protocol's range")
    table = {}
    for name, method in methods.items():
        measured = per_crop_quality(pairs, method, channel, batch_size)
        sd = {k: float(v.std()) if len(v) > 1 else 0.0 for k, v in measured.items()}
        table[name] = {"psnr": float(measured["psnr"].mean()), "psnr_sd": sd["psnr"],
                       "ssim": float(measured["ssim"].mean()), "ssim_sd": sd["ssim"]}
    return {"crops": len(pairs), "scale": pairs.protocol.scale, "channel": channel, "source": pairs.source,
            "protocol": pairs.protocol.describe(), "methods": table}


class UpscalingCases:
    """What the SR explorer needs for ``(index, scale, method)``: the crops, the upscaling and its figures.

    ``pairs``: scale -> :class:`~sodlib.data.sr_pairs.SRPairs` (the same objects at each scale, e.g. drawn pairs of
    one seed); ``methods``: scale -> {name: interpolation name or SR model}; ``classifiers``: scale -> a crop
    classifier (logits ``[B, C + 1]``, class = category id order of ``labels``), optional. Calling it returns the
    keyword arguments of :func:`sodlib.viz.super_resolution.upscaling_view`.
    """

    def __init__(self, pairs: dict, methods: dict, classifiers: dict | None = None,
                 labels: dict[int, int] | None = None) -> None:
        if set(pairs) != set(methods):
            raise ValueError(f"pairs for scales {sorted(pairs)} but methods for {sorted(methods)}")
        self.pairs, self.methods, self.classifiers = pairs, methods, classifiers or {}
        self.labels = labels  # category id -> classifier label

    def __call__(self, index: int, scale: int, method: str) -> dict:
        from sodlib.models.super_resolution import upscale
        from sodlib.viz.super_resolution import UpscalingReport

        if scale not in self.pairs:
            raise ValueError(f"scale {scale} not available; scales: {sorted(self.pairs)}")
        pairs = self.pairs[scale]
        if not 0 <= index < len(pairs):
            raise ValueError(f"index {index} outside 0..{len(pairs) - 1}")
        if method not in self.methods[scale]:
            raise ValueError(f"method {method!r} not available at x{scale}; methods: {', '.join(self.methods[scale])}")
        lr, hr = pairs.batch([index])
        shave = pairs.protocol.shave
        upscaled = upscale(lr, scale, self.methods[scale][method])
        bicubic = upscale(lr, scale, "bicubic")
        category = int(pairs.category_ids[index])
        score = None
        if scale in self.classifiers and self.labels is not None:
            classifier = self.classifiers[scale].eval()
            with torch.no_grad():
                score = float(torch.softmax(classifier(upscaled), dim=1)[0, self.labels[category]])
        report = UpscalingReport(index, scale, method, float(psnr(upscaled, hr, shave)), float(ssim(upscaled, hr, shave)),
                                 float(psnr(bicubic, hr, shave)), pairs.category_names.get(category),
                                 float(pairs.lr_sides[index]), score)
        return {"lr": lr[0], "upscaled": upscaled[0], "hr": hr[0], "report": report}
