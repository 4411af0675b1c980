"""COCO instances JSON: reading (any category set, mapped to contiguous ids) and RLE encoding."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils


def mask_to_rle(mask: np.ndarray) -> dict:
    """bool (H, W) -> COCO compressed RLE {"size": [H, W], "counts": str} (JSON-serialisable)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle
