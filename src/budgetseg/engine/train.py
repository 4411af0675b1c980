"""The training loop: seeded, resumable from per-epoch checkpoints, optionally under torchrun/DDP."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from budgetseg.config import TrainConfig
from budgetseg.data.transforms import Resolution
from budgetseg.dist import SINGLE, Dist, barrier
from budgetseg.engine.batches import Batch, Batches, TrainSet, batch_loader
from budgetseg.engine.device import autocast, enable_determinism, to_input
from budgetseg.errors import first_line, input_error
from budgetseg.io import atomic_open
from budgetseg.task import Task
from budgetseg.torchfile import load_torch_file
from budgetseg.trainlog import TrainLog


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Two parameter groups: the (pretrained) encoder at lr * encoder_lr_mult, the rest at lr. Both networks
    (DeepLabv3+ and RSIS) hold their encoder as `model.encoder`."""
    enc_ids = {id(p) for p in model.encoder.parameters()}
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


class Step:
    """One optimisation step of `task`'s network: forward, loss, backward, update.

    The loss is task.loss(task.forward(net, x, targets, progress), targets, weights), with progress = iteration /
    iterations in [0, 1) (the instance task picks its decoder steps from the targets and a curriculum). With
    cfg.consistency > 0, cfg.consistency * task.consistency_loss(student outputs, teacher logits, threshold) adds the
    online weak-to-strong loss on the pseudo-labelled samples: the model's own prediction on their weak views
    supervises their strongly augmented ones in the same step."""

    def __init__(self, net: nn.Module, model: nn.Module, opt, task: Task, cfg: TrainConfig, mean, std, d: Dist):
        self.net, self.model, self.opt, self.task, self.cfg, self.mean, self.std, self.d = (
            net,
            model,
            opt,
            task,
            cfg,
            mean,
            std,
            d,
        )

    def __call__(self, batch: Batch, progress: float) -> tuple[torch.Tensor, dict]:
        images, targets, weights, weak, online = batch
        cfg, device, task = self.cfg, self.d.device, self.task
        x = to_input(images, self.mean, self.std, device)
        targets = targets.to(device, non_blocking=True)
        with autocast(device, cfg.amp):
            out = task.forward(self.net, x, targets, progress)
            loss, terms = task.loss(out, targets, weights.to(device, non_blocking=True))
            if online.any():  # pseudo-labelled samples, with cfg.consistency > 0 (make_batch)
                teacher = teacher_logits(self.model, to_input(weak[online], self.mean, self.std, device))
                student = out[online.to(device)]
                term = cfg.consistency * task.consistency_loss(student, teacher, cfg.consistency_threshold)
                loss, terms = loss + term, terms | {"consistency": term.detach()}
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss, terms


def epoch_end(it: int, cfg: TrainConfig) -> int:
    """The iteration count at the end of iteration `it`'s epoch (the last epoch may be short)."""
    return min(cfg.iterations, (it // cfg.epoch_iters + 1) * cfg.epoch_iters)


def epoch_name(it: int, cfg: TrainConfig) -> str:
    """'epoch k/K' of the epoch that iteration `it` (0-based) lies in."""
    return f"epoch {it // cfg.epoch_iters + 1}/{math.ceil(cfg.iterations / cfg.epoch_iters)}"


def epoch_bar(it: int, cfg: TrainConfig, desc: str, d: Dist) -> tqdm:
    """The progress bar of the epoch that iteration `it` lies in, from `it` (a resumed epoch: its rest) to its end."""
    return tqdm(total=epoch_end(it, cfg) - it, desc=f"{desc} {epoch_name(it, cfg)}", disable=not d.main, leave=False)


def train(
    model: nn.Module,
    sets: list[TrainSet],
    task: Task,
    cfg: TrainConfig,
    out_dir: Path,
    *,
    size: int | Resolution,
    mean: tuple,
    std: tuple,
    seed: int,
    resume: bool,
    d: Dist = SINGLE,
    workers: int = 0,
    desc: str = "train",
    log: Callable[[str], None] = print,
) -> dict:
    """Train `model` of `task` in place for cfg.iterations iterations (Step); checkpoint to
    out_dir/last.pt every epoch, and the training curve to out_dir/metrics.csv (trainlog.py) with it. Batches come
    from `workers` processes (0: made in this one; the batches are the same either way). With resume=True and a
    checkpoint present, training continues from it. Returns {"seconds", "images_per_second"}."""
    ckpt, total = out_dir / "last.pt", cfg.iterations
    model = prepare_model(model, cfg, d, log)
    opt = make_optimizer(model, cfg)
    start, before = 0, 0.0  # iterations and training seconds spent before a resume
    if resume and ckpt.is_file():
        start, before = load_checkpoint(ckpt, model, opt, total, d.device)
        log(f"{desc}: resumed from {ckpt} at iteration {start}")
    net = nn.parallel.DistributedDataParallel(model) if d.world > 1 else model
    net.train()
    step = Step(net, model, opt, task, cfg, mean, std, d)
    loader = batch_loader(Batches(sets, cfg, size, seed, d), start, workers) if start < total else []
    curve = TrainLog(out_dir / "metrics.csv", start)
    seen, t0, bar = 0, time.perf_counter(), None
    for it, batch in zip(range(start, total), loader, strict=True):
        bar = epoch_bar(it, cfg, desc, d) if bar is None else bar
        torch.manual_seed(seed * 1_000_003 + it)  # dropout: same masks after a resume
        set_poly_lr(opt, it, total)
        loss, terms = step(batch, it / total)
        seen += len(batch[0]) * d.world
        bar.update()
        if d.main and (it + 1) % cfg.log_every == 0:  # .item() waits for the device: not every iteration
            rate = seen / (time.perf_counter() - t0)
            bar.set_postfix(loss=f"{loss.item():.3f}", img_s=f"{rate:.1f}")
            curve.add(it + 1, loss, terms, opt, round(rate, 2))
        if it + 1 == epoch_end(it, cfg):  # the epoch's last iteration: checkpoint
            bar.close()
            bar = None
            if d.main:
                meta = {"config": asdict(cfg), "seed": seed, "seconds": before + time.perf_counter() - t0}
                save_checkpoint(ckpt, model, opt, it + 1, meta)
                curve.save()
                log(f"{desc}: {epoch_name(it, cfg)} done (iteration {it + 1}, loss {loss.item():.4f})")
            barrier(d)
    secs = time.perf_counter() - t0
    return {
        "seconds": round(before + secs, 2),  # all sessions of this training, resumed ones included
        "images_per_second": round(seen / secs, 2) if seen else None,
    }
