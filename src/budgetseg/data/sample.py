"""The sample type shared by the semantic and instance tasks, and the reader interface."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image, UnidentifiedImageError

from budgetseg.errors import input_error

IGNORE = 255  # semantic label of pixels that count for nothing (VOC borders, crowd regions)


@dataclass
class Sample:
    """One image and its labels.

    image:            uint8 (H, W, 3)
    semantic:         uint8 (H, W); 0 = background, 1..C = classes, 255 = ignore
    instance_masks:   bool (K, H, W), one mask per object
    instance_classes: int64 (K,), class id (1..C) of each object
    """

    id: str
    image: np.ndarray
    semantic: np.ndarray
    instance_masks: np.ndarray
    instance_classes: np.ndarray

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) in pixels."""
        return self.image.shape[0], self.image.shape[1]


class SegDataset(Protocol):
    """What every reader offers. `class_names[0]` is the background; C = len(class_names) - 1."""

    class_names: list[str]
    ids: list[str]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...

    def load(self, image_id: str, with_image: bool = True) -> Sample:
        """The sample of `image_id`. With `with_image=False`, `image` is a (H, W, 0) placeholder (for statistics)."""
        ...


def read_image(path: str | Path) -> np.ndarray:
    """uint8 (H, W, 3) RGB; one-line errors for a missing or undecodable file."""
    path = Path(path)
    if not path.is_file():
        raise input_error(path, "image file is missing")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise input_error(path, f"cannot read image ({e.__class__.__name__}: {e})") from None


def image_size(path: str | Path) -> tuple[int, int]:
    """(H, W) of an image file, read from its header without decoding the pixels."""
    path = Path(path)
    if not path.is_file():
        raise input_error(path, "image file is missing")
    try:
        with Image.open(path) as im:
            w, h = im.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise input_error(path, f"cannot read image ({e.__class__.__name__}: {e})") from None
    return h, w


def read_label_png(path: str | Path) -> np.ndarray:
    """uint8 (H, W) of palette indices (VOC label PNGs); a corrupt or non-index PNG is an error."""
    path = Path(path)
    if not path.is_file():
        raise input_error(path, "label file is missing")
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise input_error(path, f"label PNG must be palette or grayscale, got mode {im.mode}")
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise input_error(path, f"corrupt label PNG ({e.__class__.__name__}: {e})") from None
    return arr.astype(np.uint8, copy=False)


def empty_instances(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((0, h, w), dtype=bool), np.zeros((0,), dtype=np.int64)


def voc_palette() -> list[int]:
    """The 256-entry Pascal VOC colour map as a flat [r, g, b, ...] list (index 255 = cream border)."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def encode_label_png(arr: np.ndarray, fileobj) -> None:
    """Write uint8 (H, W) indices as a VOC-palette PNG to an open binary file."""
    im = Image.fromarray(np.asarray(arr, dtype=np.uint8), mode="P")
    im.putpalette(voc_palette())
    im.save(fileobj, format="PNG")
