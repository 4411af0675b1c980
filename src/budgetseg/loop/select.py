"""Which images to label: a seeded random draw, or a diverse one (k-center greedy, the core-set rule of
Sener & Savarese 2018) on pooled features of the ImageNet encoder the pipeline uses."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from budgetseg.data.sample import SegDataset, read_image
from budgetseg.errors import BudgetsegError
from budgetseg.io import new_folder
from budgetseg.models.encoders import DEFAULT_ENCODER, create_encoder
from budgetseg.splits import random_order

STRATEGIES = ("random", "diverse")


@torch.no_grad()
def encoder_features(
    ds: SegDataset,
    ids: list[str],
    encoder: str = DEFAULT_ENCODER,
    size: int = 224,
    batch_size: int = 32,
    progress: bool = True,
) -> np.ndarray:
    """float32 (len(ids), D): the encoder's last feature map, average-pooled and L2-normalised, of each image
    resized to size x size (pixels) with the encoder's ImageNet weights (offline)."""
    from budgetseg.models.encoders import encoder_mean_std

    net, _ = create_encoder(encoder, "imagenet")
    net.eval()
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in encoder_mean_std(encoder))
    feats = []
    for lo in tqdm(range(0, len(ids), batch_size), desc="features", disable=not progress, leave=False):
        batch = [read_image(ds.image_path(i), resize=(size, size)) for i in ids[lo : lo + batch_size]]
        x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float().div_(255.0)
        x = ((x - mean) / std).contiguous(memory_format=torch.channels_last)
        f = net(x)[-1].mean(dim=(2, 3))
        feats.append(torch.nn.functional.normalize(f, dim=1).numpy())
    return np.concatenate(feats) if feats else np.zeros((0, 0), np.float32)


def k_center_greedy(feats: np.ndarray, n: int, seed: int = 0) -> list[int]:
    """Indices of n rows of feats (P, D): a seeded random first centre, then each time the row farthest (L2)
    from every centre chosen so far, so that the chosen rows cover the pool."""
    if not 0 <= n <= len(feats):
        raise BudgetsegError(f"cannot select {n} of {len(feats)} images")
    if n == 0:
        return []
    chosen = [int(np.random.default_rng(seed).integers(len(feats)))]
    dist = np.full(len(feats), np.inf)
    for _ in range(n - 1):
        dist = np.minimum(dist, ((feats - feats[chosen[-1]]) ** 2).sum(1))
        chosen.append(int(dist.argmax()))
    return chosen


def select(
    ds: SegDataset, n: int, strategy: str = "random", seed: int = 0, encoder: str = DEFAULT_ENCODER
) -> list[str]:
    """n ids of `ds` to label, in the order chosen. random: the first n of the seeded permutation that the
    simulation's splits use (so `data.strong: ids.txt` reproduces `n_strong: N` with that seed); diverse:
    k-center greedy on encoder_features."""
    ids = list(ds.ids)
    if not 1 <= n <= len(ids):
        raise BudgetsegError(f"cannot select {n} images: the pool holds {len(ids)}")
    if strategy == "random":
        return random_order(ids, seed)[:n]
    if strategy == "diverse":
        return [ids[k] for k in k_center_greedy(encoder_features(ds, ids, encoder), n, seed)]
    raise BudgetsegError(f"unknown strategy {strategy!r} (choose from {', '.join(STRATEGIES)})")


def copy_images(ds: SegDataset, ids: list[str], out: str | Path) -> Path:
    """Copy the image files of `ids` into folder `out` (new or empty), all or nothing: ready to upload to an
    annotation tool. Each is decoded first: only images are copied (a name in an annotation file may point at any
    file inside the dataset)."""
    paths = [ds.image_path(i) for i in ids]
    for p in paths:
        read_image(p)  # one-line error naming a missing file or one that is no image
    names = [p.name for p in paths]
    if len(set(names)) < len(names):
        dup = next(x for x in names if names.count(x) > 1)
        raise BudgetsegError(f"two selected images share the file name {dup!r}; cannot copy both into {out}")
    with new_folder(out, "choose another --copy folder") as tmp:
        for p in paths:
            shutil.copy2(p, tmp / p.name)
    return Path(out)
