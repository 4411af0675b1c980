"""Training and inference loops: seeded, resumable from per-epoch checkpoints, optionally under torchrun/DDP.

Every random choice of a training run is a pure function of (seed, iteration, sample position), so a run
resumed from a checkpoint draws the same batches and augmentations as an uninterrupted one.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from budgetseg.config import TrainConfig
from budgetseg.data.sample import SegDataset
from budgetseg.data.transforms import color_cutout, letterbox, random_scale_crop_flip
from budgetseg.io import atomic_open

# ------------------------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


SINGLE = Dist()  # one process, no DDP


def init_distributed() -> Dist:
    """Join the torchrun process group when launched by torchrun (gloo on CPU, nccl on GPU), else one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if world > 1 and not cuda:
        # Ranks share the machine's cores: oversubscribed threads make every rank slower.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    return Dist(dist.get_rank() if world > 1 else 0, world, device)


def autocast(device: torch.device, amp: bool):
    """bf16 autocast on CUDA when `amp`; a no-op context elsewhere (CPU runs fp32: bf16 is slow on most CPUs)."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and device.type == "cuda")


def loader_workers(requested: int | None, d: Dist) -> int:
    """Worker processes for a DataLoader: `requested`, or from the machine (None): on CUDA the rank's share of
    the cores less the main process's, at most 8; on CPU none where a rank has at most 2 cores, since the
    workers would take them from the model's own threads."""
    if requested is not None:
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    cores = max(1, cores // d.world)
    if d.device.type == "cuda":
        return max(1, min(8, cores - 1))
    return 0 if cores <= 2 else min(4, cores // 2)


def barrier(d: Dist) -> None:
    if d.world > 1:
        dist.barrier()


def gather_objects(d: Dist, obj):
    """List of `obj` from every rank (in rank order); [obj] without DDP."""
    if d.world == 1:
        return [obj]
    out = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


# ------------------------------------------------------------------------------------------------- data


@dataclass
class TrainSet:
    """Images and dense targets held in RAM: uint8 (H, W, 3) and uint8 (H, W) each."""

    images: list[np.ndarray]
    masks: list[np.ndarray]
    pseudo: bool = False  # pseudo-labelled: gets the pseudo loss weight and the strong augmentation


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
    sizes = [len(s.images) for s in sets]
    if strong_fraction is None or len(sets) == 1 or sizes[1] == 0:
        return [(-1, it * batch + j) for j in range(batch)]  # -1: the union stream
    k = max(1, round(batch * strong_fraction))
    return [(0, it * k + j) for j in range(k)] + [(1, it * (batch - k) + j) for j in range(batch - k)]


def _item(sets: list[TrainSet], stream: int, pos: int, seed: int) -> tuple[int, int]:
    """(set index, item index) of a plan entry; stream -1 is the union of all sets."""
    sizes = [len(s.images) for s in sets]
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


def make_batch(
    sets: list[TrainSet], plan: list[tuple[int, int]], cfg: TrainConfig, size: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """uint8 images (B, size, size, 3), long targets (B, size, size), float loss weights (B,)."""
    images, masks, weights, pseudo = [], [], [], []
    for stream, pos in plan:
        si, item = _item(sets, stream, pos, seed)
        s = sets[si]
        rng = np.random.default_rng([seed, 7, stream + 1, pos])
        im, mk = random_scale_crop_flip(s.images[item], s.masks[item], size, rng, (cfg.scale_min, cfg.scale_max))
        if s.pseudo and cfg.pseudo_color_aug:
            im, mk = color_cutout(im, mk, rng)
        if s.pseudo:
            pseudo.append(len(images))
        images.append(im)
        masks.append(mk)
        weights.append(cfg.pseudo_weight if s.pseudo else 1.0)
    if cfg.pseudo_cutmix and plan:
        cutmix(images, masks, pseudo, np.random.default_rng([seed, 11, plan[0][0] + 1, plan[0][1]]))
    return (
        torch.from_numpy(np.stack(images)),
        torch.from_numpy(np.stack(masks)).long(),
        torch.tensor(weights, dtype=torch.float32),
    )


def to_input(images: torch.Tensor, mean: tuple, std: tuple, device: torch.device) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> normalised float (B, 3, H, W) in channels_last memory."""
    x = images.to(device).permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=device).view(1, 3, 1, 1)
    return ((x - m) / s).contiguous(memory_format=torch.channels_last)


# -------------------------------------------------------------------------------------------- training


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Two parameter groups: the (pretrained) encoder at lr * encoder_lr_mult, the rest at lr."""
    enc = getattr(model, "encoder", None)
    enc_ids = {id(p) for p in enc.parameters()} if enc is not None else set()
    groups = [
        {"params": [p for p in model.parameters() if id(p) in enc_ids], "lr": cfg.lr * cfg.encoder_lr_mult},
        {"params": [p for p in model.parameters() if id(p) not in enc_ids], "lr": cfg.lr},
    ]
    for g in groups:
        g["initial_lr"] = g["lr"]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def set_poly_lr(opt: torch.optim.Optimizer, it: int, total: int, power: float = 0.9) -> None:
    f = (1 - it / total) ** power
    for g in opt.param_groups:
        g["lr"] = g["initial_lr"] * f


def save_checkpoint(path: Path, model: nn.Module, opt: torch.optim.Optimizer, it: int, meta: dict) -> None:
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "iteration": it, **meta}
    with atomic_open(path, "wb") as f:
        torch.save(state, f)


def train(
    model: nn.Module,
    sets: list[TrainSet],
    loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    cfg: TrainConfig,
    out_dir: Path,
    *,
    size: int,
    mean: tuple,
    std: tuple,
    seed: int,
    resume: bool,
    d: Dist = SINGLE,
    desc: str = "train",
    log: Callable[[str], None] = print,
    forward: Callable[[nn.Module, torch.Tensor, torch.Tensor, float], Any] | None = None,
) -> dict:
    """Train `model` in place for cfg.iterations iterations; checkpoint to out_dir/last.pt every epoch.

    loss_fn(outputs, targets (B, H, W[, 2]), weights (B,)) -> scalar, where outputs = forward(net, x, targets,
    progress) with progress = iteration / iterations in [0, 1) (default net(x); the instance task picks its
    decoder steps from the targets and a curriculum). With resume=True and a checkpoint
    present, training continues from it. Returns timing figures {"seconds", "images_per_second"}.
    """
    ckpt = out_dir / "last.pt"
    model.to(d.device).to(memory_format=torch.channels_last)
    opt = make_optimizer(model, cfg)
    start, before = 0, 0.0  # iterations and training seconds spent before a resume
    if resume and ckpt.is_file():
        state = torch.load(ckpt, map_location=d.device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start = state["iteration"]
        before = state.get("seconds", 0.0)
        log(f"{desc}: resumed from {ckpt} at iteration {start}")
    net = nn.parallel.DistributedDataParallel(model) if d.world > 1 else model
    net.train()
    total = cfg.iterations
    epochs = math.ceil(total / cfg.epoch_iters)
    seen, t0 = 0, time.perf_counter()
    for epoch in range(start // cfg.epoch_iters, epochs):
        lo, hi = max(start, epoch * cfg.epoch_iters), min(total, (epoch + 1) * cfg.epoch_iters)
        if lo >= hi:  # resumed from the checkpoint at the very end: nothing left to train
            continue
        bar = tqdm(
            range(lo, hi),
            desc=f"{desc} epoch {epoch + 1}/{epochs}",
            disable=not d.main,
            leave=False,
            dynamic_ncols=True,
        )
        for it in bar:
            plan = batch_plan(sets, cfg.batch_size, it, cfg.strong_fraction)[d.rank :: d.world]
            images, targets, weights = make_batch(sets, plan, cfg, size, seed)
            torch.manual_seed(seed * 1_000_003 + it)  # dropout: same masks after a resume
            set_poly_lr(opt, it, total)
            x = to_input(images, mean, std, d.device)
            targets = targets.to(d.device)
            out = forward(net, x, targets, it / total) if forward else net(x)
            loss = loss_fn(out, targets, weights.to(d.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(plan) * d.world
            if d.main:
                bar.set_postfix(loss=f"{loss.item():.3f}", img_s=f"{seen / (time.perf_counter() - t0):.1f}")
        bar.close()
        if d.main:
            meta = {"config": asdict(cfg), "seed": seed, "seconds": before + time.perf_counter() - t0}
            save_checkpoint(ckpt, model, opt, hi, meta)
            log(f"{desc}: epoch {epoch + 1}/{epochs} done (iteration {hi}, loss {loss.item():.4f})")
        barrier(d)
    secs = time.perf_counter() - t0
    return {
        "seconds": round(before + secs, 2),  # all sessions of this training, resumed ones included
        "images_per_second": round(seen / secs, 2) if seen else None,
    }


# ------------------------------------------------------------------------------------------- inference


@torch.no_grad()
def predict(
    model: nn.Module,
    ds: SegDataset,
    ids: list[str],
    task,
    *,
    size: int,
    mean: tuple,
    std: tuple,
    batch_size: int = 16,
    tta: bool = False,
    scales: list[float] = (1.0,),
    d: Dist = SINGLE,
    progress: str | None = None,
) -> Iterator[tuple[object, object]]:
    """Yield (sample, prediction) for this rank's share of `ids`; the task turns the raw batch output into one
    image's prediction at the sample's own resolution (`task.infer`, `task.decode`).

    Images are letterboxed to size x size, so any image size works and batches stay uniform. Streams: only
    one batch is held at a time.
    """
    model.to(d.device).eval()
    mine = ids[d.rank :: d.world]
    bar = tqdm(total=len(mine), desc=progress, disable=progress is None or not d.main, leave=False)
    for lo in range(0, len(mine), batch_size):
        samples = [ds.load(i) for i in mine[lo : lo + batch_size]]
        boxes = [letterbox(s.image, size) for s in samples]
        x = to_input(torch.from_numpy(np.stack([b[0] for b in boxes])), mean, std, d.device)
        raw = task.infer(model, x, tta, scales, ids=[s.id for s in samples])
        for j, (s, (_, hw)) in enumerate(zip(samples, boxes, strict=True)):
            yield s, task.decode(raw, j, hw, s.size)
        bar.update(len(samples))
    bar.close()
