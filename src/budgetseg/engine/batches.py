"""Training batches: which images batch `it` holds, their augmented crops and targets, made by worker processes.

Every random choice is a pure function of (seed, iteration, sample position), so a run resumed from a checkpoint
draws the same batches and augmentations as an uninterrupted one, whatever the number of workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from budgetseg.config import TrainConfig
from budgetseg.data.sample import IGNORE, SegDataset, read_image
from budgetseg.data.transforms import Resolution, color_cutout, random_scale_crop_flip
from budgetseg.dist import Dist
from budgetseg.task import PseudoLabels, Task


@dataclass
class TrainSet:
    """Training images of `ids` in `ds`, read from disk when drawn, so that memory does not grow with their number.

    Strong sets take the dense target from the ground truth (`task.target(sample)`: uint8 (H, W), or (H, W, 2) for
    instances); pseudo-labelled ones (`pseudo_labels` set: the task's pseudo-label folder) from the pseudo-labels
    there (`pseudo_labels.target`), get the pseudo loss weight and the strong augmentation."""

    ds: SegDataset
    ids: list[str]
    task: Task
    pseudo_labels: PseudoLabels | None = None

    @property
    def pseudo(self) -> bool:
        return self.pseudo_labels is not None

    def __len__(self) -> int:
        return len(self.ids)

    def get(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """uint8 image (H, W, 3) and target of item k."""
        image_id = self.ids[k]
        if self.pseudo_labels is None:
            sample = self.ds.load(image_id)
            return sample.image, self.task.target(sample)
        image = read_image(self.ds.image_path(image_id))  # its own labels, if any, are not for training
        return image, self.pseudo_labels.target(image_id, image.shape[:2])


def stream_index(seed: int, stream: int, position: int, n: int) -> int:
    """Item at `position` of an endless sequence of seeded permutations of range(n)."""
    epoch, offset = divmod(position, n)
    return int(np.random.default_rng([seed, stream, epoch]).permutation(n)[offset])


def batch_plan(sets: list[TrainSet], batch: int, it: int, strong_fraction: float | None) -> list[tuple[int, int]]:
    """(set index, position in its stream) of every sample of global batch `it`.

    strong_fraction None: sample uniformly over the union of all sets. Otherwise a fixed share of each batch
    comes from the first (strong) set and the rest from the second (pseudo-labelled) one, so that a few
    strong images are not drowned by many pseudo-labelled ones.
    """
    sizes = [len(s) for s in sets]
    if strong_fraction is None or len(sets) == 1 or sizes[1] == 0:
        return [(-1, it * batch + j) for j in range(batch)]  # -1: the union stream
    k = max(1, round(batch * strong_fraction))
    return [(0, it * k + j) for j in range(k)] + [(1, it * (batch - k) + j) for j in range(batch - k)]


def _item(sets: list[TrainSet], stream: int, pos: int, seed: int) -> tuple[int, int]:
    """(set index, item index) of a plan entry; stream -1 is the union of all sets."""
    sizes = [len(s) for s in sets]
    if stream == -1:
        flat = stream_index(seed, 99, pos, sum(sizes))
        si = int(np.searchsorted(np.cumsum(sizes), flat, side="right"))
        return si, flat - sum(sizes[:si])
    return stream, stream_index(seed, stream, pos, sizes[stream])


def cutmix(images: list[np.ndarray], masks: list[np.ndarray], members: list[int], rng: np.random.Generator) -> None:
    """In place: each member image, with probability 0.5, gets a random box (10-50 % of its area) of another
    member pasted in, image and labels alike (CutMix on pseudo-labelled images, as in French et al. 2020)."""
    if len(members) < 2:
        return
    originals = {i: (images[i].copy(), masks[i].copy()) for i in members}
    for i in members:
        if rng.random() >= 0.5:
            continue
        j = members[(members.index(i) + 1 + int(rng.integers(len(members) - 1))) % len(members)]
        h, w = masks[i].shape[:2]
        frac = np.sqrt(rng.uniform(0.1, 0.5))
        bh, bw = max(1, int(h * frac)), max(1, int(w * frac))
        y, x = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
        images[i] = images[i].copy()
        masks[i] = masks[i].copy()
        images[i][y : y + bh, x : x + bw] = originals[j][0][y : y + bh, x : x + bw]
        masks[i][y : y + bh, x : x + bw] = originals[j][1][y : y + bh, x : x + bw]


class Batch(NamedTuple):
    """One training batch. images uint8 (B, S, S, 3), targets long (B, S, S[, 2]), weights float (B,); with
    online consistency (cfg.consistency > 0) weak uint8 (B, S, S, 3): each image before its photometric (strong)
    augmentation, same geometry, and online bool (B,): the samples that get the consistency loss (pseudo-labelled
    ones). Without it weak is empty and online all False."""

    images: torch.Tensor
    targets: torch.Tensor
    weights: torch.Tensor
    weak: torch.Tensor
    online: torch.Tensor


def make_batch(
    sets: list[TrainSet], plan: list[tuple[int, int]], cfg: TrainConfig, size: int | Resolution, seed: int
) -> Batch:
    """The batch of `plan`: augmented crops of the crop side (`size`: a Resolution, or an int crop side at the fit
    scale) and their targets (see Batch)."""
    images, masks, weights, pseudo, mixed, weak = [], [], [], [], [], []
    for stream, pos in plan:
        si, item = _item(sets, stream, pos, seed)
        s = sets[si]
        rng = np.random.default_rng([seed, 7, stream + 1, pos])
        im, mk = random_scale_crop_flip(*s.get(item), size, rng, (cfg.scale_min, cfg.scale_max))
        if cfg.consistency:
            weak.append(im)  # before the photometric augmentation (color_cutout returns new arrays)
        if (s.pseudo and cfg.pseudo_color_aug) or cfg.color_aug:
            im, mk = color_cutout(im, mk, rng)
        if (s.pseudo and cfg.pseudo_cutmix) or cfg.cutmix:  # the images CutMix mixes
            mixed.append(len(images))
        if s.pseudo:
            pseudo.append(len(images))
        images.append(im)
        masks.append(mk)
        weights.append(cfg.pseudo_weight if s.pseudo else 1.0)
    if len({m.ndim for m in masks}) > 1:  # semantic pseudo-label pairs beside plain labels, which have no second
        masks = [m if m.ndim == 3 else np.stack([m, np.full_like(m, IGNORE)], axis=-1) for m in masks]
    if mixed:
        mix_seed = [seed, 11, plan[0][0] + 1, plan[0][1]]
        cutmix(images, masks, mixed, np.random.default_rng(mix_seed))
        if weak:  # the same boxes in the weak views, so both views show one scene
            cutmix(weak, [m.copy() for m in masks], mixed, np.random.default_rng(mix_seed))
    online = torch.zeros(len(plan), dtype=torch.bool)
    online[pseudo] = bool(cfg.consistency)
    return Batch(
        torch.from_numpy(np.stack(images)),
        torch.from_numpy(np.stack(masks)).long(),
        torch.tensor(weights, dtype=torch.float32),
        torch.from_numpy(np.stack(weak)) if weak else torch.zeros(0, dtype=torch.uint8),
        online,
    )


class Batches(torch.utils.data.Dataset):
    """Global iteration `it` -> this rank's share of batch `it` (make_batch): a pure function of (seed, it), so
    worker processes can make batches ahead of the loop and a resumed run draws the same ones."""

    def __init__(self, sets: list[TrainSet], cfg: TrainConfig, size: int | Resolution, seed: int, d: Dist):
        self.sets, self.cfg, self.size, self.seed, self.d = sets, cfg, size, seed, d

    def __len__(self) -> int:
        return self.cfg.iterations

    def __getitem__(self, it: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        plan = batch_plan(self.sets, self.cfg.batch_size, it, self.cfg.strong_fraction)[self.d.rank :: self.d.world]
        return make_batch(self.sets, plan, self.cfg, self.size, self.seed)


def batch_loader(batches: Batches, start: int, workers: int) -> torch.utils.data.DataLoader:
    """Batches start, start + 1, ... made by `workers` processes (0: in this one), pinned for the GPU."""
    return torch.utils.data.DataLoader(
        batches,
        batch_size=None,  # items are whole batches already
        sampler=range(start, len(batches)),
        num_workers=workers,
        pin_memory=batches.d.device.type == "cuda",
        prefetch_factor=4 if workers else None,
    )
