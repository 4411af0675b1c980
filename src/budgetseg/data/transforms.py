"""Joint (image, mask) transforms on uint8 numpy arrays; masks are padded with the ignore value 255; the working
resolution at which a network sees images."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from budgetseg.data.sample import IGNORE

STRIDE = 32  # whole images are padded to a multiple of the coarsest feature map (RSIS 32; DeepLab's 16 divides it)


@dataclass(frozen=True)
class Resolution:
    """How a network sees images: training crops of `crop` x `crop` px from images rescaled around the working
    scale; whole images at the working scale for evaluation, pseudo-labels and predict.

    scale: fit (the longer side becomes `crop`: images shrunk or grown to the crop, and letterboxed to crop x crop
    for inference), native (images as they are) or an int (the shorter side in px). window: inference on images
    whose longer side at the working scale exceeds it (px) goes by sliding windows of that side (semantic) or
    shrinks the image to it (instance; Resolution.factor with cap=True); None: no limit."""

    crop: int
    scale: int | str = "fit"
    window: int | None = None

    @classmethod
    def of(cls, size: int | Resolution) -> Resolution:
        """`size` itself, or a crop side (int) at the fit scale."""
        return size if isinstance(size, Resolution) else cls(int(size))

    @classmethod
    def of_meta(cls, meta: dict) -> Resolution:
        """The working resolution a model.pt's metadata records (files written before it existed: fit, no
        window)."""
        return cls(int(meta["size"]), meta.get("scale", "fit"), meta.get("window"))

    def factor(self, h: int, w: int, cap: bool = False) -> float:
        """Scale factor from an (h, w) image to the working scale; with `cap`, at most what brings its longer side
        to `window`."""
        if self.scale == "fit":
            f = self.crop / max(h, w)
        elif self.scale == "native":
            f = 1.0
        else:
            f = int(self.scale) / min(h, w)
        if cap and self.window is not None:
            f = min(f, self.window / max(h, w))
        return f


def _resize(image: np.ndarray, mask: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    im = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    mk = np.asarray(Image.fromarray(mask).resize((w, h), Image.NEAREST))
    return im, mk


def fit_scale(h: int, w: int, size: int) -> float:
    """Scale that makes the longer side `size` pixels."""
    return size / max(h, w)


def resolution(data) -> Resolution:
    """The Resolution of a DataConfig (size, scale, window)."""
    return Resolution(data.size, data.scale, data.window)


def random_scale_crop_flip(
    image: np.ndarray, mask: np.ndarray, size: int | Resolution, rng: np.random.Generator, scale: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Resize by the working scale's factor (Resolution.factor; an int size: the longer side becomes size) times
    U(scale), pad to >= the crop side (image 0, mask 255), random crop x crop crop, random horizontal flip. image
    uint8 (H, W, 3), mask uint8 (H, W) or (H, W, 2) (the instance target) -> (crop, crop, 3), (crop, crop[, 2])."""
    res = Resolution.of(size)
    size = res.crop
    h, w = mask.shape[:2]
    s = res.factor(h, w) * rng.uniform(*scale)
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


def working_image(image: np.ndarray, size: int | Resolution, cap: bool = False) -> tuple[np.ndarray, tuple[int, int]]:
    """The image as a network sees it whole: letterboxed to crop x crop at the fit scale; otherwise resized to the
    working scale (`cap`: at most `window` on its longer side) and padded bottom / right with 0 to a multiple of
    STRIDE. Returns the canvas uint8 (H', W', 3) and the (h, w) of the image inside it."""
    res = Resolution.of(size)
    if res.scale == "fit":
        return letterbox(image, res.crop)
    h, w = image.shape[:2]
    f = res.factor(h, w, cap)
    nh, nw = max(1, round(h * f)), max(1, round(w * f))
    if (nh, nw) != (h, w):
        image = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))
    ph, pw = -(-nh // STRIDE) * STRIDE, -(-nw // STRIDE) * STRIDE
    canvas = np.zeros((ph, pw, 3), np.uint8)
    canvas[:nh, :nw] = image
    return canvas, (nh, nw)


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
