"""Super-resolution networks for small object crops: SRCNN, ESPCN and a conv-deconv encoder-decoder, by name.

Every model maps ``Tensor[B, 3, h, w]`` (RGB in ``[0, 1]``, the low-resolution crop) to
``Tensor[B, 3, s h, s w]`` (the same crop ``s`` times larger) and carries ``scale`` (2 or 4) and ``name``.
They differ in *where* they upsample, which sets what they cost:

=================  ====================================================  ==============================
name               layers                                                 works at
=================  ====================================================  ==============================
``srcnn``          bicubic x s, then conv 9x9 (64), 1x1 (32), 5x5 (3)     high resolution (all 3 layers)
                   (Dong et al. 2014, "9-1-5")
``espcn``          conv 5x5 (64), 3x3 (32), 3x3 (3 s^2), pixel shuffle   low resolution; the last layer's
                   (Shi et al. 2016, sub-pixel convolution)               ``3 s^2`` maps are rearranged
                                                                          into the ``s``-times larger image
``encoder_decoder``  ``depth`` 3x3 convs, ``depth`` 3x3 transposed       low resolution, but for the
                   convs with a skip from every second conv to its        ``log2 s`` upsampling deconvs
                   mirrored deconv, then stride-2 deconvs to ``s`` times  (Mao et al. 2016, RED-Net; the
                   the size, plus the bicubic upscaling of the input      SR network of Krishna and
                   (the network learns the residual)                      Jawahar 2017)
=================  ====================================================  ==============================

A convolution on an ``H x W`` map with ``k x k`` kernels, ``c_in`` inputs and ``c_out`` outputs costs
``H W k^2 c_in c_out`` multiply-adds, so SRCNN's 9x9 and 5x5 layers at ``s H x s W`` cost ``s^2`` times what the
same layers would cost at low resolution; ESPCN pays that factor only in its last layer's width (``3 s^2``),
and the encoder-decoder only in its upsampling deconvolutions. RED-Net itself runs every layer on the
bicubic-upscaled image; ours keeps its symmetric skips and residual output but works at low resolution, which
makes it about ``s^2`` times cheaper (choice stated in notebook 06).

Choices where the papers leave room (stated, and the same for every model): padding keeps the size ("same"
zero padding, where SRCNN used valid convolutions and a smaller output), the bicubic step is
``torch.nn.functional.interpolate(mode="bicubic", align_corners=False)`` (half-pixel centres: low-resolution
pixel ``i`` covers high-resolution pixels ``[s i, s i + s)``), RGB in and out (SRCNN used the Y channel only),
and no clamping inside the network (:func:`upscale` clamps to ``[0, 1]`` at inference).
``residual=True`` adds the bicubic upscaling of the input to SRCNN's or ESPCN's output (a global skip, as
VDSR; off by default, as in their papers); the encoder-decoder always has it, as RED-Net.

Build one with ``build_sr_model("espcn", scale=2)``; :func:`list_sr_models` names them and
:func:`register_sr_model` adds one.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SRCNN", "ESPCN", "EncoderDecoderSR", "SR_SCALES", "register_sr_model", "list_sr_models",
           "build_sr_model", "sr_model_scales", "bicubic_upscale", "upscale", "INTERPOLATIONS", "multiply_adds"]

#: The scales every built-in model supports.
SR_SCALES: tuple[int, ...] = (2, 4)
#: Classical upsamplers, by the name :func:`upscale` takes.
INTERPOLATIONS: tuple[str, ...] = ("bilinear", "bicubic", "nearest")

# name -> (builder(scale, **options) -> nn.Module, supported scales)
_SR_BUILDERS: dict[str, tuple[Callable[..., nn.Module], tuple[int, ...]]] = {}


def register_sr_model(name: str, scales: Sequence[int] = SR_SCALES) -> Callable:
    """Decorator: register ``builder(scale, **options) -> nn.Module`` under ``name`` for the given scales."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"super-resolution model name {name!r} must be an identifier such as 'espcn'")

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _SR_BUILDERS and _SR_BUILDERS[name][0] is not builder:
            raise ValueError(f"super-resolution model {name!r} is registered already; fix: choose another name")
        _SR_BUILDERS[name] = (builder, tuple(int(s) for s in scales))
        return builder

    return decorate


def list_sr_models() -> list[str]:
    """The registered super-resolution model names, sorted."""
    return sorted(_SR_BUILDERS)


def sr_model_scales(name: str) -> tuple[int, ...]:
    """The scales model ``name`` supports; an unknown name is an error that lists the registered ones."""
    if name not in _SR_BUILDERS:
        raise ValueError(f"super-resolution model {name!r} is not registered; registered: {', '.join(list_sr_models())} "
                         "(fix: --model one of these)")
    return _SR_BUILDERS[name][1]


def check_scale(name: str, scale: int) -> int:
    """``scale`` as an int if model ``name`` supports it, else a ``ValueError`` naming the scales it does."""
    scales = sr_model_scales(name)
    if isinstance(scale, bool) or not isinstance(scale, int) or scale not in scales:
        raise ValueError(f"scale={scale!r}: model {name!r} supports scales {', '.join(map(str, scales))}; "
                         "fix: --scale one of these")
    return scale


def build_sr_model(name: str, scale: int, **options) -> nn.Module:
    """The registered model ``name`` for ``scale``, with ``name``, ``scale`` and ``build_options`` set on it."""
    check_scale(name, scale)
    model = _SR_BUILDERS[name][0](scale, **options)
    model.name = name
    model.scale = scale
    model.build_options = {"name": name, "scale": scale, **options}
    return model


def bicubic_upscale(images: Tensor, scale: int) -> Tensor:
    """``Tensor[B, C, h, w] -> Tensor[B, C, s h, s w]``, bicubic with half-pixel centres, not clamped."""
    return F.interpolate(images, scale_factor=scale, mode="bicubic", align_corners=False)


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a Tensor[B, 3, h, w] of RGB crops in [0, 1], got {shape}; "
                         "fix: stack the crops into one batch (add a batch dimension with images[None])")


def upscale(images: Tensor, scale: int, method: str | nn.Module) -> Tensor:
    """Upscale ``Tensor[B, 3, h, w]`` by ``scale`` with a classical method name (:data:`INTERPOLATIONS`) or an
    SR model (run in eval mode, without gradients), clamped to ``[0, 1]``: ``Tensor[B, 3, s h, s w]``."""
    _check_images(images)
    if isinstance(method, nn.Module):
        if getattr(method, "scale", scale) != scale:
            raise ValueError(f"the model upscales by {method.scale}, not scale={scale}; fix: pass weights trained for x{scale}")
        was_training = method.training
        method.eval()
        with torch.no_grad():
            out = method(images)
        method.train(was_training)
    elif method in INTERPOLATIONS:
        align = None if method == "nearest" else False
        out = F.interpolate(images, scale_factor=scale, mode=method, align_corners=align)
    else:
        raise ValueError(f"method {method!r} is neither an SR model nor one of {', '.join(INTERPOLATIONS)}")
    return out.clamp(0.0, 1.0)


class SRCNN(nn.Module):
    """Dong et al.'s three layers on the bicubic-upscaled crop: patch extraction (9x9, 64 maps, ReLU),
    non-linear mapping (1x1, 32 maps, ReLU), reconstruction (5x5, 3 maps).

    ``forward(Tensor[B, 3, h, w]) -> Tensor[B, 3, s h, s w]``.
    """

    def __init__(self, scale: int, widths: tuple[int, int] = (64, 32), residual: bool = False) -> None:
        super().__init__()
        self.scale, self.residual = scale, residual
        self.extract = nn.Conv2d(3, widths[0], 9, padding=4)
        self.map = nn.Conv2d(widths[0], widths[1], 1)
        self.reconstruct = nn.Conv2d(widths[1], 3, 5, padding=2)

    def forward(self, images: Tensor) -> Tensor:
        upscaled = bicubic_upscale(images, self.scale)
        out = self.reconstruct(F.relu(self.map(F.relu(self.extract(upscaled)))))
        return out + upscaled if self.residual else out


class ESPCN(nn.Module):
    """Shi et al.'s efficient sub-pixel network: every convolution at low resolution, then a pixel shuffle
    rearranges ``Tensor[B, 3 s^2, h, w]`` into ``Tensor[B, 3, s h, s w]`` (output pixel ``(s y + i, s x + j)``
    of channel ``c`` is input channel ``c s^2 + i s + j`` at ``(y, x)``). Layers 5x5 (64, tanh), 3x3 (32, tanh),
    3x3 (``3 s^2``).
    """

    def __init__(self, scale: int, widths: tuple[int, int] = (64, 32), residual: bool = False) -> None:
        super().__init__()
        self.scale, self.residual = scale, residual
        self.first = nn.Conv2d(3, widths[0], 5, padding=2)
        self.second = nn.Conv2d(widths[0], widths[1], 3, padding=1)
        self.sub_pixel = nn.Conv2d(widths[1], 3 * scale * scale, 3, padding=1)

    def forward(self, images: Tensor) -> Tensor:
        features = torch.tanh(self.second(torch.tanh(self.first(images))))
        out = F.pixel_shuffle(self.sub_pixel(features), self.scale)
        return out + bicubic_upscale(images, self.scale) if self.residual else out


class EncoderDecoderSR(nn.Module):
    """A conv-deconv encoder-decoder with symmetric skips (RED-Net style) that works at low resolution and
    upsamples with its last transposed convolutions.

    ``depth`` 3x3 convolutions (``width`` maps, ReLU) encode the crop; ``depth`` 3x3 transposed convolutions
    decode it at the same size, the output of every second encoder layer added to the input of its mirrored
    decoder layer; then ``log2 s`` transposed convolutions of kernel 4 and stride 2 each double the size
    (``width -> width / 2 -> ... -> 3`` maps); the bicubic upscaling of the input is added to the output, so the
    network learns the residual::

        e_0 = x,  e_i = relu(conv_i(e_{i-1}))                                     i = 1..depth
        d_0 = e_depth,  d_j = relu(deconv_j(d_{j-1} + e_{depth-j+1} [if depth-j+1 even, j > 1]))
        out = up_{log2 s}(... relu(up_1(d_depth))) + bicubic(x)

    ``forward(Tensor[B, 3, h, w]) -> Tensor[B, 3, s h, s w]``.
    """

    def __init__(self, scale: int, depth: int = 6, width: int = 32) -> None:
        super().__init__()
        if depth < 2 or depth % 2:
            raise ValueError(f"depth={depth} must be an even number >= 2 (skips join every second layer)")
        if scale & (scale - 1):
            raise ValueError(f"scale={scale} must be a power of two (each upsampling layer doubles the size)")
        self.scale, self.depth = scale, depth
        self.encoder = nn.ModuleList(nn.Conv2d(3 if i == 0 else width, width, 3, padding=1) for i in range(depth))
        self.decoder = nn.ModuleList(nn.ConvTranspose2d(width, width, 3, padding=1) for _ in range(depth))
        doublings = scale.bit_length() - 1
        channels = [max(width >> k, 8) for k in range(doublings)] + [3]
        self.upsample = nn.ModuleList(nn.ConvTranspose2d(channels[k], channels[k + 1], 4, stride=2, padding=1)
                                      for k in range(doublings))

    def forward(self, images: Tensor) -> Tensor:
        encoded = [images]
        x = images
        for conv in self.encoder:
            x = F.relu(conv(x))
            encoded.append(x)
        for j, deconv in enumerate(self.decoder, start=1):
            mirrored = self.depth - j + 1
            if j > 1 and mirrored % 2 == 0:
                x = x + encoded[mirrored]
            x = F.relu(deconv(x))
        for k, up in enumerate(self.upsample):
            x = up(x)
            if k < len(self.upsample) - 1:
                x = F.relu(x)
        return x + bicubic_upscale(images, self.scale)


@register_sr_model("srcnn")
def _srcnn(scale: int, residual: bool = False) -> nn.Module:
    return SRCNN(scale, residual=residual)


@register_sr_model("espcn")
def _espcn(scale: int, residual: bool = False) -> nn.Module:
    return ESPCN(scale, residual=residual)


@register_sr_model("encoder_decoder")
def _encoder_decoder(scale: int, depth: int = 6, width: int = 32) -> nn.Module:
    return EncoderDecoderSR(scale, depth=depth, width=width)


def multiply_adds(model: nn.Module, lr_size: int) -> int:
    """Multiply-adds of one forward pass on an ``lr_size x lr_size`` RGB crop, counted over the convolutions::

        Conv2d:           H_out W_out k_h k_w c_in c_out / groups
        ConvTranspose2d:  H_in  W_in  k_h k_w c_in c_out / groups

    (the bicubic step, activations and the pixel shuffle are left out: they cost little beside the layers).
    """
    total = 0

    def count(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal total
        k_h, k_w = module.kernel_size
        per_position = k_h * k_w * module.in_channels * module.out_channels // module.groups
        height, width = (inputs[0].shape[-2:] if isinstance(module, nn.ConvTranspose2d) else output.shape[-2:])
        total += int(height) * int(width) * per_position

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, lr_size, lr_size))
    finally:
        for hook in hooks:
            hook.remove()
    return total
