"""Joint (image, mask) transforms on uint8 numpy arrays; masks are padded with the ignore value 255."""

from __future__ import annotations

import numpy as np
from PIL import Image

from budgetseg.data.sample import IGNORE


def _resize(image: np.ndarray, mask: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    im = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    mk = np.asarray(Image.fromarray(mask).resize((w, h), Image.NEAREST))
    return im, mk


def fit_scale(h: int, w: int, size: int) -> float:
    """Scale that makes the longer side `size` pixels."""
    return size / max(h, w)


def random_scale_crop_flip(
    image: np.ndarray, mask: np.ndarray, size: int, rng: np.random.Generator, scale: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Resize so the longer side is size * U(scale), pad to >= size (image 0, mask 255), random size x size crop,
    random horizontal flip. image uint8 (H, W, 3), mask uint8 (H, W) or (H, W, 2) (the instance target) ->
    (size, size, 3), (size, size[, 2])."""
    h, w = mask.shape[:2]
    s = fit_scale(h, w, size) * rng.uniform(*scale)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    image, mask = _resize(image, mask, nh, nw)
    ph, pw = max(size, nh), max(size, nw)
    if (ph, pw) != (nh, nw):
        image = np.pad(image, ((0, ph - nh), (0, pw - nw), (0, 0)))
        pad = ((0, ph - nh), (0, pw - nw)) + ((0, 0),) * (mask.ndim - 2)
        mask = np.pad(mask, pad, constant_values=IGNORE)
    y, x = rng.integers(0, ph - size + 1), rng.integers(0, pw - size + 1)
    image, mask = image[y : y + size, x : x + size], mask[y : y + size, x : x + size]
    if rng.random() < 0.5:
        image, mask = image[:, ::-1], mask[:, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)


def color_cutout(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Strong augmentation for pseudo-labelled images (as in ST++/UniMatch): brightness, contrast and
    saturation jitter, then one random cutout box whose pixels become 255 in the mask."""
    x = image.astype(np.float32)
    x = x * rng.uniform(0.6, 1.4)  # brightness
    x = (x - x.mean()) * rng.uniform(0.6, 1.4) + x.mean()  # contrast
    gray = x.mean(axis=2, keepdims=True)
    x = gray + (x - gray) * rng.uniform(0.5, 1.5)  # saturation
    image = np.clip(x, 0, 255).astype(np.uint8)
    mask = mask.copy()
    h, w = mask.shape[:2]
    if rng.random() < 0.5:
        ch, cw = int(h * rng.uniform(0.1, 0.4)), int(w * rng.uniform(0.1, 0.4))
        y, x0 = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        image[y : y + ch, x0 : x0 + cw] = 127
        mask[y : y + ch, x0 : x0 + cw] = IGNORE
    return image, mask


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Resize the longer side to `size` and pad bottom/right to size x size. Returns the canvas and the
    (h, w) of the image inside it, to crop predictions back before resizing them to the original size."""
    h, w = image.shape[:2]
    s = fit_scale(h, w, size)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    if (nh, nw) != (h, w):
        image = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))
    canvas = np.zeros((size, size, 3), np.uint8)
    canvas[:nh, :nw] = image
    return canvas, (nh, nw)
