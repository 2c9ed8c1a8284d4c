"""Geometry of one paste: warping an object's pixels and mask, finding a free place, blurring the seam.

These are the mechanics behind :mod:`sodlib.augment.copy_paste`; the rules (which objects, how many times)
live there. Coordinates follow the library's convention: pixel ``(row, col)`` covers ``[col, col + 1) x
[row, row + 1)``, its centre is ``(col + 0.5, row + 0.5)``.
"""
from __future__ import annotations

import math

import numpy as np

from sodlib.data.masks import mask_box


def warp_object(pixels: np.ndarray, mask: np.ndarray, scale: float, angle_degrees: float) -> tuple[np.ndarray, np.ndarray] | None:
    """Scale and rotate an object about its box centre; return its new pixels and mask, cropped tight.

    Args:
        pixels: ``float32 [C, h, w]``, the image inside the object's tight box.
        mask: ``bool [h, w]``, the object's mask inside the same box.
        scale: factor on the object's side (``1.2`` makes it 20 % wider and taller).
        angle_degrees: rotation angle (positive turns the object clockwise on screen, the y axis points down).

    Returns:
        ``(pixels float32 [C, h', w'], mask bool [h', w'])`` on the tight box of the new mask, or None when the
        new mask is empty (a very small object shrunk below one pixel).

    Each output pixel centre ``q`` is mapped back to ``p = R(-angle) (q - c') / scale + c`` in the source
    box and sampled bilinearly, with the mask as weights: ``alpha = sum_i w_i m_i`` (the bilinear mask
    value) and ``value = sum_i w_i m_i x_i / alpha``. The new mask is ``alpha >= 0.5``, and the pasted values
    are made of object pixels only (no background from around the source bleeds into the copy).
    """
    channels, height, width = pixels.shape
    theta = math.radians(angle_degrees)
    cos, sin = math.cos(theta), math.sin(theta)
    centre_x, centre_y = width / 2.0, height / 2.0
    corners = np.array([[0, 0], [width, 0], [0, height], [width, height]], dtype=np.float64) - [centre_x, centre_y]
    turned_x = scale * (cos * corners[:, 0] - sin * corners[:, 1])
    turned_y = scale * (sin * corners[:, 0] + cos * corners[:, 1])
    left, top = math.floor(turned_x.min()), math.floor(turned_y.min())
    out_width, out_height = math.ceil(turned_x.max()) - left, math.ceil(turned_y.max()) - top

    qx = np.arange(out_width, dtype=np.float64) + 0.5 + left
    qy = np.arange(out_height, dtype=np.float64)[:, None] + 0.5 + top
    # inverse map: rotate back by -theta, undo the scale, move to the source box (index coordinates)
    source_x = (cos * qx + sin * qy) / scale + centre_x - 0.5
    source_y = (-sin * qx + cos * qy) / scale + centre_y - 0.5

    # the mask (channel 0) and the masked pixels (channels 1..C), padded by one empty pixel so that every
    # bilinear tap has an index; taps far outside clip onto the empty pad
    padded = np.zeros((channels + 1, height + 2, width + 2), dtype=np.float32)
    padded[0, 1:-1, 1:-1] = mask
    padded[1:, 1:-1, 1:-1] = pixels * mask
    flat = padded.reshape(channels + 1, -1)
    x0 = np.floor(source_x)
    y0 = np.floor(source_y)
    fx = (source_x - x0).astype(np.float32).ravel()
    fy = (source_y - y0).astype(np.float32).ravel()
    ix0 = np.minimum(np.maximum(x0.astype(np.int64) + 1, 0), width + 1).ravel()
    iy0 = np.minimum(np.maximum(y0.astype(np.int64) + 1, 0), height + 1).ravel()
    ix1 = np.minimum(ix0 + 1, width + 1)
    iy1 = np.minimum(iy0 + 1, height + 1)
    stride = width + 2
    taps = ((iy0 * stride + ix0, (1 - fy) * (1 - fx)), (iy0 * stride + ix1, (1 - fy) * fx),
            (iy1 * stride + ix0, fy * (1 - fx)), (iy1 * stride + ix1, fy * fx))
    sampled = sum(flat[:, index] * weight for index, weight in taps).reshape(channels + 1, out_height, out_width)
    alpha, values = sampled[0], sampled[1:]
    new_mask = alpha >= 0.5
    box = mask_box(new_mask)
    if box is None:
        return None
    bx1, by1, bx2, by2 = box
    new_mask = new_mask[by1:by2, bx1:bx2]
    values = values[:, by1:by2, bx1:bx2] / np.maximum(alpha[by1:by2, bx1:bx2], 1e-12)
    return values * new_mask, new_mask


def fits(occupied: np.ndarray, mask: np.ndarray, top: int, left: int) -> bool:
    """True when ``mask`` placed with its top-left pixel at ``(top, left)`` shares no pixel with ``occupied``."""
    height, width = mask.shape
    return not np.any(occupied[top:top + height, left:left + width] & mask)


def free_places(occupied: np.ndarray, mask: np.ndarray, margin: int) -> np.ndarray:
    """Every top-left ``(top, left)`` where ``mask`` overlaps nothing and stays ``margin`` px inside the image.

    Args:
        occupied: ``bool [H, W]``, pixels taken by objects.
        mask: ``bool [h, w]``, the object to place (cropped to its tight box).
        margin: the smallest number of free pixels between the object and each image border.

    Returns:
        ``int64 [K, 2]`` rows ``(top, left)``. The overlap count of every placement is the correlation of
        ``occupied`` with ``mask``, computed by FFT (float64; counts are whole numbers, so ``< 0.5`` means 0).
    """
    image_height, image_width = occupied.shape
    height, width = mask.shape
    rows = image_height - 2 * margin - height + 1
    cols = image_width - 2 * margin - width + 1
    if rows <= 0 or cols <= 0:
        return np.zeros((0, 2), dtype=np.int64)
    inner = occupied[margin:image_height - margin, margin:image_width - margin].astype(np.float64)
    shape = (inner.shape[0] + height - 1, inner.shape[1] + width - 1)
    spectrum = np.fft.rfft2(inner, shape) * np.fft.rfft2(mask[::-1, ::-1].astype(np.float64), shape)
    overlap = np.fft.irfft2(spectrum, shape)[height - 1:height - 1 + rows, width - 1:width - 1 + cols]
    places = np.argwhere(overlap < 0.5)
    return places + margin


def find_place(rng: np.random.Generator, occupied: np.ndarray, mask: np.ndarray, margin: int, tries: int) -> tuple[int, int] | None:
    """A uniformly random free top-left ``(top, left)`` for ``mask``, or None when no placement exists.

    First ``tries`` uniform draws over the placements inside the margin, each accepted when it overlaps
    nothing (rejection sampling: an accepted draw is uniform over the free placements). When all of them
    fail, :func:`free_places` lists every free placement exactly and one is drawn; None only when that list
    is empty, so a paste is never skipped while a place exists.
    """
    image_height, image_width = occupied.shape
    height, width = mask.shape
    last_top, last_left = image_height - margin - height, image_width - margin - width
    if last_top < margin or last_left < margin:
        return None
    for _ in range(tries):
        top = int(rng.integers(margin, last_top + 1))
        left = int(rng.integers(margin, last_left + 1))
        if fits(occupied, mask, top, left):
            return top, left
    places = free_places(occupied, mask, margin)
    if len(places) == 0:
        return None
    top, left = places[int(rng.integers(len(places)))]
    return int(top), int(left)


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """``bool [h, w]``: pixels within ``radius`` (a ``(2r+1)``-square) of a set pixel; outside counts as unset."""
    if radius <= 0:
        return mask.copy()
    height, width = mask.shape
    padded = np.zeros((height + 2 * radius, width + 2 * radius), dtype=bool)
    padded[radius:radius + height, radius:radius + width] = mask
    out = np.zeros_like(mask, dtype=bool)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            out |= padded[dy:dy + height, dx:dx + width]
    return out


def gaussian_kernel(size: int) -> np.ndarray:
    """``float32 [size]`` normalised 1-D Gaussian taps; sigma as OpenCV picks it for a kernel size:
    ``sigma = 0.3 ((size - 1) / 2 - 1) + 0.8`` (0.8 for 3, 1.1 for 5)."""
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2
    taps = np.exp(-offsets**2 / (2 * sigma**2))
    return (taps / taps.sum()).astype(np.float32)


def blur_seam(image: np.ndarray, mask: np.ndarray, top: int, left: int, others: np.ndarray, kernel_size: int) -> None:
    """Gaussian-blur, in place, the band of pixels around a pasted object's outline.

    Args:
        image: ``float32 [C, H, W]``, already holding the pasted object.
        mask: ``bool [h, w]``, the pasted object's mask, top-left at ``(top, left)``.
        others: ``bool [H, W]``, pixels of the other objects; they are never changed.
        kernel_size: odd Gaussian kernel size (the paper tried 3 and 5).

    The band is every pixel within ``r = kernel_size // 2`` of the outline on either side
    (``dilate(mask, r) & ~erode(mask, r)``), minus ``others``; its pixels take the values of the image blurred
    by a separable ``kernel_size`` Gaussian (edges replicated).
    """
    radius = kernel_size // 2
    channels, image_height, image_width = image.shape
    height, width = mask.shape
    # the region: the object's box grown by the band, and by the kernel's reach for the blur's input
    y1, x1 = max(top - 2 * radius, 0), max(left - 2 * radius, 0)
    y2, x2 = min(top + height + 2 * radius, image_height), min(left + width + 2 * radius, image_width)
    local = np.zeros((y2 - y1, x2 - x1), dtype=bool)
    local[top - y1:top - y1 + height, left - x1:left - x1 + width] = mask
    eroded = ~dilate(~local, radius)
    band = dilate(local, radius) & ~eroded & ~others[y1:y2, x1:x2]
    region = image[:, y1:y2, x1:x2]
    taps = gaussian_kernel(kernel_size)
    padded = np.pad(region, ((0, 0), (radius, radius), (radius, radius)), mode="edge")
    rows = sum(taps[i] * padded[:, i:i + region.shape[1], :] for i in range(kernel_size))
    blurred = sum(taps[i] * rows[:, :, i:i + region.shape[2]] for i in range(kernel_size))
    region[:, band] = blurred[:, band]
