"""Overlays: an image with the colours of a label or object map mixed in, as predict and the HTML review page
draw them (the VOC palette of the label maps)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from budgetseg.data.sample import voc_palette

OVERLAY_ALPHA = 0.5  # share of the class / instance colour in an overlay pixel
JPEG_QUALITY = 90


def palette_array() -> np.ndarray:
    """uint8 (256, 3): the VOC colours of the label maps."""
    return np.asarray(voc_palette(), np.uint8).reshape(256, 3)


OVERLAY_ROWS_PIXELS = 1 << 22  # pixels blended at a time: float copies of a huge image would take 12 bytes a pixel


def blend(image: np.ndarray, index: np.ndarray, palette: np.ndarray, first: int = 1) -> Image.Image:
    """RGB `image` (uint8 (H, W, 3)) with palette[index] mixed in at OVERLAY_ALPHA where the uint8 index (H, W) is
    at least `first` (0 for a label set without background: every class), made a band of rows at a time (its
    memory: the picture, once)."""
    h, w = index.shape
    out = Image.new("RGB", (w, h))
    band = max(1, OVERLAY_ROWS_PIXELS // w)
    for top in range(0, h, band):
        part, idx = image[top : top + band].copy(), index[top : top + band]
        where = idx >= first
        mixed = (1 - OVERLAY_ALPHA) * part[where].astype(np.float32) + OVERLAY_ALPHA * palette[idx[where]]
        part[where] = np.round(mixed).astype(np.uint8)
        out.paste(Image.fromarray(part), (0, top))
    return out


def save_jpeg(image: Image.Image, f) -> None:
    image.save(f, format="JPEG", quality=JPEG_QUALITY)
