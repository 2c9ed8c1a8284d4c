"""The one downscaling kernel of the super-resolution protocol, shared by every source of image pairs."""
from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["downscale_antialiased", "DOWNSCALE_KERNEL"]

DOWNSCALE_KERNEL = "Pillow bicubic (a = -0.5), antialiased: the kernel's support widened by the factor"


def downscale_antialiased(pixels: np.ndarray, scale: int) -> np.ndarray:
    """``uint8 [H, W, 3] -> uint8 [H / s, W / s, 3]`` with Pillow's bicubic resize.

    Pillow widens the cubic kernel by the downscaling factor (antialiasing, as MATLAB's ``imresize``), so each
    output pixel is a weighted mean of about ``4 s x 4 s`` input pixels centred on it: output pixel ``i`` sits at
    input coordinate ``s (i + 1/2)`` (half-pixel centres). ``H`` and ``W`` must be multiples of ``s``.
    """
    height, width = pixels.shape[:2]
    if height % scale or width % scale:
        raise ValueError(f"a {height} x {width} crop cannot be downscaled by {scale}; fix: crop sides that are multiples of the scale")
    return np.array(Image.fromarray(pixels).resize((width // scale, height // scale), Image.BICUBIC))
