"""Predictions back at their images' sizes: bilinear resizing a tile at a time (memory bounded whatever the size),
and the images of a batch that need none."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn


def image_probs(probs: torch.Tensor, j: int, hw: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Image j's probabilities (C, H, W) at its own `size`, from the letterboxed (h, w) = hw region of the batch's
    (B, C, h', w'). C float maps at the image's size: for a large image, decode resizes tile by tile instead."""
    p = probs[j, :, : hw[0], : hw[1]]
    if tuple(hw) != tuple(size):
        p = nn.functional.interpolate(p[None], size=size, mode="bilinear", align_corners=False)[0]
    return p


BAND_BYTES = 64 << 20  # float working memory of one band of a prediction resized to its image's size


def _source_index(n_in: int, n_out: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each of n_out positions along one axis: the two input positions it lies between and the weight (float32)
    of the second, as torch's bilinear resize (align_corners=False) computes them."""
    src = ((torch.arange(n_out, device=device, dtype=torch.float32) + 0.5) * (n_in / n_out) - 0.5).clamp_min(0)
    lo = src.floor().long().clamp_max(n_in - 1)
    return lo, (lo + 1).clamp_max(n_in - 1), src - lo


def resized_tiles(x: torch.Tensor, size: tuple[int, int]) -> Iterator[tuple[slice, slice, torch.Tensor]]:
    """x (C, h, w) resized bilinearly to size (H, W) as nn.functional.interpolate(align_corners=False) resizes it
    (the same weights, in the same order: equal up to float rounding), a tile at a time: (rows, columns, float
    (C, rows, columns)). The float memory stays within BAND_BYTES whatever the size, so a huge image costs its
    uint8 outputs, not C float maps of its size."""
    (c, h, w), (out_h, out_w) = x.shape, size
    y0, y1, wy = _source_index(h, out_h, x.device)
    x0, x1, wx = _source_index(w, out_w, x.device)
    x = x.float()
    tile_w = max(1, BAND_BYTES // (8 * c * h))  # a column tile's input rows resized along the width, twice over
    band = max(1, BAND_BYTES // (16 * c * min(tile_w, out_w)))  # about four (C, band, tile) float temporaries
    for left in range(0, out_w, tile_w):
        cols = slice(left, min(left + tile_w, out_w))
        across = x[..., x0[cols]] * (1 - wx[cols]) + x[..., x1[cols]] * wx[cols]  # (C, h, columns)
        for top in range(0, out_h, band):
            rows = slice(top, min(top + band, out_h))
            wb = wy[rows].view(1, -1, 1)
            yield rows, cols, across[:, y0[rows]] * (1 - wb) + across[:, y1[rows]] * wb


def unresized(hws: list, sizes: list) -> list[int]:
    """Positions in a batch of the images whose letterboxed region (h, w) is already their own size: their
    predictions need no resizing, so a task can reduce and copy them together (decode_batch)."""
    return [j for j, (hw, size) in enumerate(zip(hws, sizes, strict=True)) if tuple(hw) == tuple(size)]


def batch_rows(batch, same: list[int]):
    """The rows `same` of a batched tensor (or of each tensor of a dict), without an indexing kernel when all."""
    if isinstance(batch, dict):
        return {k: batch_rows(v, same) for k, v in batch.items()}
    return batch if len(same) == len(batch) else batch[same]
