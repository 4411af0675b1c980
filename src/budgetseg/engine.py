"""Training and inference loops: seeded, resumable from per-epoch checkpoints, optionally under torchrun/DDP.

Every random choice of a training run is a pure function of (seed, iteration, sample position), so a run
resumed from a checkpoint draws the same batches and augmentations as an uninterrupted one.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from budgetseg.config import TrainConfig
from budgetseg.data.sample import IGNORE, SegDataset, read_image
from budgetseg.data.transforms import Resolution, color_cutout, random_scale_crop_flip, working_image
from budgetseg.errors import first_line, input_error
from budgetseg.io import atomic_open
from budgetseg.torchfile import load_torch_file
from budgetseg.trainlog import TrainLog

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


def enable_determinism(device: torch.device) -> None:
    """Make training on `device` reproducible bit for bit: deterministic algorithms only (an op without one
    raises), deterministic cuDNN convolutions without autotuning; on CUDA a fixed cuBLAS workspace. Global for
    the process. Our models need no layer swaps for it: torch's bilinear resize switches to a decomposition with a
    deterministic backward in this mode, and AdaptiveAvgPool2d(1) runs as a mean (tests/test_deterministic.py)."""
    if device.type == "cuda" and "CUBLAS_WORKSPACE_CONFIG" not in os.environ:
        # cuBLAS reads this when its first handle is made (the process's first CUDA matmul): set it before that.
        # A value the user set is kept; torch raises if it is not a deterministic one.
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


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
    """Training images of `ids` in `ds`, read from disk when drawn, so that memory does not grow with their number.

    Strong sets take the dense target from the ground truth (`task.target(sample)`: uint8 (H, W), or (H, W, 2) for
    instances); pseudo-labelled ones (pseudo_dir set) from the pseudo-labels there (`task.pseudo_target`), get
    the pseudo loss weight and the strong augmentation."""

    ds: SegDataset
    ids: list[str]
    task: Any
    pseudo_dir: Path | None = None

    @property
    def pseudo(self) -> bool:
        return self.pseudo_dir is not None

    def __len__(self) -> int:
        return len(self.ids)

    def get(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """uint8 image (H, W, 3) and target of item k."""
        image_id = self.ids[k]
        if self.pseudo_dir is None:
            sample = self.ds.load(image_id)
            return sample.image, self.task.target(sample)
        image = read_image(self.ds.image_path(image_id))  # its own labels, if any, are not for training
        return image, self.task.pseudo_target(self.pseudo_dir, image_id, image.shape[:2])


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


@functools.lru_cache(maxsize=16)
def _mean_std(mean: tuple, std: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # made once per device: torch.tensor(..., device=cuda) copies from pageable memory and waits for the GPU,
    # which each training step and inference batch would otherwise pay (the CPU could not run ahead)
    return torch.tensor(mean, device=device).view(1, 3, 1, 1), torch.tensor(std, device=device).view(1, 3, 1, 1)


def to_input(images: torch.Tensor, mean: tuple, std: tuple, device: torch.device) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> normalised float (B, 3, H, W) in channels_last memory."""
    x = images.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
    m, s = _mean_std(tuple(mean), tuple(std), device)
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


def load_checkpoint(
    path: Path, model: nn.Module, opt: torch.optim.Optimizer, iterations: int, device: torch.device
) -> tuple[int, float]:
    """Restore `model` and `opt` from save_checkpoint's file; returns (iteration, training seconds before). The file
    may come from anyone (a run folder passed on): tensors, numbers and strings only are loaded (no code runs), and
    one that does not fit the network or the schedule of `iterations` is a one-line error naming it."""
    state = load_torch_file(path, "a training checkpoint", map_location=device)
    it = state.get("iteration") if isinstance(state, dict) else None
    seconds = state.get("seconds", 0.0) if isinstance(state, dict) else None
    if not isinstance(it, int) or not 0 <= it <= iterations or not isinstance(seconds, int | float):
        raise input_error(path, f"not a training checkpoint of this network's {iterations} iterations")
    try:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise input_error(path, f"does not fit this network and optimizer ({first_line(err)})") from None
    return it, float(seconds) if math.isfinite(seconds) else 0.0


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


def prepare_model(model: nn.Module, cfg: TrainConfig, d: Dist, log: Callable[[str], None]) -> nn.Module:
    """Move `model` to the device in channels_last; with cfg.deterministic turn on deterministic algorithms;
    with cfg.sync_bn under multi-GPU DDP, BatchNorm over all GPUs (timm's converter keeps its fused BatchNorm +
    activation layers). Changes `model` in place (state dict keys unchanged) and returns it."""
    if cfg.deterministic:
        enable_determinism(d.device)
    if cfg.sync_bn and d.world > 1:
        if d.device.type == "cuda":
            import timm.layers

            model = timm.layers.convert_sync_batchnorm(model)
        else:
            log("sync_bn: SyncBatchNorm runs on GPUs only; BatchNorm stays per process on CPU")
    return model.to(d.device).to(memory_format=torch.channels_last)


@torch.no_grad()
def teacher_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's prediction on the weak views x, in eval mode (BatchNorm's running statistics, no dropout; as
    UniMatch's teacher pass), the model left in training mode."""
    model.eval()
    try:
        return model(x)
    finally:
        model.train()


def train(
    model: nn.Module,
    sets: list[TrainSet],
    loss_fn: Callable[[Any, torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict]],
    cfg: TrainConfig,
    out_dir: Path,
    *,
    size: int,
    mean: tuple,
    std: tuple,
    seed: int,
    resume: bool,
    d: Dist = SINGLE,
    workers: int = 0,
    desc: str = "train",
    log: Callable[[str], None] = print,
    forward: Callable[[nn.Module, torch.Tensor, torch.Tensor, float], Any] | None = None,
    consistency: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor] | None = None,
) -> dict:
    """Train `model` in place for cfg.iterations iterations; checkpoint to out_dir/last.pt every epoch, and the
    training curve to out_dir/metrics.csv (trainlog.py) with it.

    loss_fn(outputs, targets (B, H, W[, 2]), weights (B,)) -> (scalar, {term name: detached scalar}), where
    outputs = forward(net, x, targets, progress) with progress = iteration / iterations in [0, 1) (default net(x);
    the instance task picks its decoder steps from the targets and a curriculum). Batches come from `workers`
    processes (0: made in this one; the batches are the same either way). With cfg.consistency > 0,
    consistency(student outputs, teacher logits, threshold) -> scalar adds the online weak-to-strong loss on the
    pseudo-labelled samples: the model's own prediction on their weak views supervises their strongly augmented
    ones in the same step. With resume=True and a checkpoint present, training continues from it. Returns
    {"seconds", "images_per_second"}.
    """
    ckpt = out_dir / "last.pt"
    model = prepare_model(model, cfg, d, log)
    opt = make_optimizer(model, cfg)
    start, before = 0, 0.0  # iterations and training seconds spent before a resume
    if resume and ckpt.is_file():
        start, before = load_checkpoint(ckpt, model, opt, cfg.iterations, d.device)
        log(f"{desc}: resumed from {ckpt} at iteration {start}")
    net = nn.parallel.DistributedDataParallel(model) if d.world > 1 else model
    net.train()
    total, per_epoch = cfg.iterations, cfg.epoch_iters
    epochs = math.ceil(total / per_epoch)
    seen, t0, bar, loss = 0, time.perf_counter(), None, None
    loader = batch_loader(Batches(sets, cfg, size, seed, d), start, workers) if start < total else []
    curve = TrainLog(out_dir / "metrics.csv", start)
    for it, (images, targets, weights, weak, online) in zip(range(start, total), loader, strict=True):
        epoch = it // per_epoch
        if bar is None:
            hi = min(total, (epoch + 1) * per_epoch)
            bar = tqdm(total=hi - it, desc=f"{desc} epoch {epoch + 1}/{epochs}", disable=not d.main, leave=False)
        torch.manual_seed(seed * 1_000_003 + it)  # dropout: same masks after a resume
        set_poly_lr(opt, it, total)
        x = to_input(images, mean, std, d.device)
        targets = targets.to(d.device, non_blocking=True)
        with autocast(d.device, cfg.amp):
            out = forward(net, x, targets, it / total) if forward else net(x)
            loss, terms = loss_fn(out, targets, weights.to(d.device, non_blocking=True))
            if consistency is not None and online.any():
                teacher = teacher_logits(model, to_input(weak[online], mean, std, d.device))
                term = cfg.consistency * consistency(out[online.to(d.device)], teacher, cfg.consistency_threshold)
                loss, terms = loss + term, terms | {"consistency": term.detach()}
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += len(images) * d.world
        bar.update()
        if d.main and (it + 1) % cfg.log_every == 0:  # .item() waits for the device: not every iteration
            rate = seen / (time.perf_counter() - t0)
            bar.set_postfix(loss=f"{loss.item():.3f}", img_s=f"{rate:.1f}")
            curve.add(it + 1, loss, terms, opt, round(rate, 2))
        if it + 1 == hi:  # the epoch's last iteration: checkpoint
            bar.close()
            bar = None
            if d.main:
                meta = {"config": asdict(cfg), "seed": seed, "seconds": before + time.perf_counter() - t0}
                save_checkpoint(ckpt, model, opt, hi, meta)
                curve.save()
                log(f"{desc}: epoch {epoch + 1}/{epochs} done (iteration {hi}, loss {loss.item():.4f})")
            barrier(d)
    secs = time.perf_counter() - t0
    return {
        "seconds": round(before + secs, 2),  # all sessions of this training, resumed ones included
        "images_per_second": round(seen / secs, 2) if seen else None,
    }


# ------------------------------------------------------------------------------------------- inference


class Letterboxed(torch.utils.data.Dataset):
    """Item k: (sample of ids[k], its image at the working resolution on a uint8 (H', W', 3) canvas (working_image:
    letterboxed to size x size at the fit scale), (h, w) of the image inside).

    A DataLoader runs it in worker processes, so images decode beside the forward pass (readers are plain
    Python objects and fork fine)."""

    def __init__(self, ds: SegDataset, ids: list[str], size: int | Resolution, cap: bool = False):
        self.ds, self.ids, self.size, self.cap = ds, ids, size, cap

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, k: int) -> tuple[object, torch.Tensor, tuple[int, int]]:
        sample = self.ds.load(self.ids[k])
        canvas, hw = working_image(sample.image, self.size, self.cap)
        return sample, torch.from_numpy(canvas), hw


def collate_letterboxed(items: list) -> tuple[list, torch.Tensor, list[tuple[int, int]]]:
    """Samples, images stacked to uint8 (B, H', W', 3) (canvases of other sizes padded bottom / right with 0 to the
    largest), (h, w) of each image inside its canvas."""
    samples, canvases, hws = zip(*items, strict=True)
    h, w = max(c.shape[0] for c in canvases), max(c.shape[1] for c in canvases)
    if any(c.shape[:2] != (h, w) for c in canvases):
        canvases = [nn.functional.pad(c, (0, 0, 0, w - c.shape[1], 0, h - c.shape[0])) for c in canvases]
    return list(samples), torch.stack(canvases), list(hws)


def predict_loader(
    ds: SegDataset, ids: list[str], size: int | Resolution, batch_size: int, workers: int, pin: bool, cap: bool = False
):
    """Batches of `ids` in order (consecutive chunks of batch_size), loaded by `workers` processes (0: here)."""
    chunks = [range(lo, min(lo + batch_size, len(ids))) for lo in range(0, len(ids), batch_size)]
    return torch.utils.data.DataLoader(
        Letterboxed(ds, ids, size, cap),
        batch_sampler=chunks,
        num_workers=workers,
        collate_fn=collate_letterboxed,
        pin_memory=pin,
    )


def shard(items: list, d: Dist) -> list:
    """This rank's contiguous share of `items`: concatenated in rank order, the shares give `items` back."""
    n = len(items)
    return items[d.rank * n // d.world : (d.rank + 1) * n // d.world]


@torch.no_grad()
def predict(
    model: nn.Module,
    ds: SegDataset,
    ids: list[str],
    task,
    *,
    size: int | Resolution,
    mean: tuple,
    std: tuple,
    batch_size: int = 16,
    tta: bool = False,
    scales: list[float] = (1.0,),
    d: Dist = SINGLE,
    progress: str | None = None,
    workers: int = 0,
    amp: bool = False,
) -> Iterator[tuple[object, object]]:
    """Yield (sample, prediction) for this rank's share of `ids`; the task turns the raw batch output into one
    image's prediction at the sample's own resolution on the device (`task.infer`, `task.decode_batch`), so only the
    decoded prediction reaches the CPU, where `task.finish` completes it.

    Images are seen whole at the working resolution (`size`: a Resolution, or an int: letterboxed to size x size),
    padded to the largest of their batch; beyond its window, a semantic task predicts sliding windows (infer_tiled)
    and an instance task shrinks them. `workers` processes decode them ahead of the loop (0: in this one; the
    predictions do not depend on it); `amp`: bf16 autocast on CUDA (engine.autocast). Streams: a few batches are
    held at a time.

    On CUDA a batch's predictions are yielded once the next batch is queued on the device: the caller's work on
    them (writing files, scoring) overlaps the GPU's. A task's decode may therefore copy to the CPU with
    non_blocking=True (pinned memory); its results are read only after the device has reached them.
    """
    model.to(d.device).eval()
    mine = ids[d.rank :: d.world]
    cuda = d.device.type == "cuda"
    bar = tqdm(total=len(mine), desc=progress, disable=progress is None or not d.main, leave=False)
    pending = None  # (samples, predictions, event): the batch before, its copies to the CPU maybe in flight
    res = Resolution.of(size)
    for samples, images, hws in predict_loader(ds, mine, res, batch_size, workers, pin=cuda, cap=not task.tiles):
        x = to_input(images.to(d.device, non_blocking=cuda), mean, std, d.device)
        with autocast(d.device, amp):
            raw = infer_tiled(task, model, x, res.window, tta, scales, [s.id for s in samples])
        preds = task.decode_batch(raw, hws, [s.size for s in samples])
        done = torch.cuda.Event() if cuda else None
        if done is not None:
            done.record()
        if pending is not None:
            yield from _landed(task, *pending, bar)
        pending = (samples, preds, done)
    if pending is not None:
        yield from _landed(task, *pending, bar)
    bar.close()


def window_starts(n: int, window: int) -> list[int]:
    """Offsets of windows of side `window` covering 0..n, overlapping by a third at least, the last flush at the
    end."""
    if n <= window:
        return [0]
    step = max(1, window * 2 // 3)
    return sorted({*range(0, n - window, step), n - window})


def infer_tiled(task, model: nn.Module, x: torch.Tensor, window: int | None, tta: bool, scales, ids: list[str]):
    """task.infer on x (B, 3, H, W); where H or W exceeds `window` and the task tiles (semantic), its probabilities
    (B, C, H, W) are those of sliding windows of window x window, averaged where they overlap (the image at its
    working scale, whatever its size, in windows the network was trained near)."""
    h, w = x.shape[-2:]
    if window is None or not task.tiles or (h <= window and w <= window):
        return task.infer(model, x, tta, scales, ids=ids)
    total, count = None, torch.zeros((1, 1, h, w), device=x.device)
    for y in window_starts(h, window):
        for x0 in window_starts(w, window):
            p = task.infer(model, x[:, :, y : y + window, x0 : x0 + window], tta, scales, ids=ids)
            if total is None:
                total = torch.zeros((*p.shape[:2], h, w), dtype=p.dtype, device=p.device)
            total[:, :, y : y + window, x0 : x0 + window] += p
            count[:, :, y : y + window, x0 : x0 + window] += 1
    return total / count


def _landed(task, samples: list, decoded: list, done, bar) -> Iterator[tuple[object, object]]:
    """A batch's (sample, prediction) pairs once the device has finished them (done: a CUDA event, or None)."""
    if done is not None:
        done.synchronize()
    for s, x in zip(samples, decoded, strict=True):
        yield s, task.finish(x)
    bar.update(len(samples))
