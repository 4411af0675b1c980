"""Training and pseudo-labelling throughput of the pipeline next to a bare loop of the same model, at the same
precision and test-time augmentation, on the same images. Prints figures (one JSON object with --json); asserts
nothing.

    GLIBC_TUNABLES=... .venv/bin/python benchmarks/throughput.py [--task semantic|instance] [--device cpu|cuda]
        [--size 128] [--batch 8] [--iters 40] [--pseudo-images 400] [--workers N] [--writers N] [--json]

"bare" training = forward + backward + step on batches made beforehand and already on the device; "bare"
pseudo-labelling = the network's inference (task.infer) on images decoded and letterboxed beforehand, already
on the device, the best of three passes. The pipeline figures include everything else: reading, augmenting,
copying, writing files.

Both sides are steady-state rates: the bare loops leave out their first steps (memory allocation, kernel
tuning), and the pipeline's rate is the marginal one between a short and a full run (a quarter of the
iterations / images, then all), so the one-off start-up (worker processes, first batches, tuning) cancels; it is
reported on its own (`*_fixed_s`), with the full run's overall rate (`*_overall_img_s`).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from budgetseg.config import ModelConfig, TrainConfig, load_config
from budgetseg.data.readers import open_dataset
from budgetseg.data.transforms import letterbox
from budgetseg.dist import Dist, loader_workers
from budgetseg.engine.batches import Batches, TrainSet
from budgetseg.engine.device import autocast, to_input
from budgetseg.engine.train import make_optimizer, prepare_model, train
from budgetseg.engine.writer import writer_threads
from budgetseg.models.encoders import encoder_mean_std
from budgetseg.pseudo import predict_pool
from budgetseg.task import InferOptions
from budgetseg.tasks import make_task


def pool_writers(task, d: Dist) -> int:
    """The writer threads predict_pool gives the task's pseudo-label files by default."""
    return writer_threads(d.device, d.world) if task.pseudo_labels(Path(".")).writes_release_gil else 0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_train(model, batches, mean, std, cfg: TrainConfig, task, d: Dist) -> float:
    """img/s of forward + backward + step on batches already on the device: the ceiling for the pipeline."""
    model = prepare_model(model, cfg, d, print)
    model.train()
    opt = make_optimizer(model, cfg)
    on_device = [(to_input(i, mean, std, d.device), t.to(d.device), w.to(d.device)) for i, t, w, *_ in batches]
    t0, n = None, 0
    for k, (x, targets, weights) in enumerate(on_device):
        if k == 2:  # the first steps allocate and tune kernels; the pipeline's figure includes them, a bit unfair
            sync(d.device)
            t0, n = time.perf_counter(), 0
        with autocast(d.device, cfg.amp):
            loss = task.loss(task.forward(model, x, targets), targets, weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += len(x)
    sync(d.device)
    return n / (time.perf_counter() - t0)


@torch.no_grad()
def bare_infer(
    model, task, images: list[torch.Tensor], mean, std, pseudo, amp: bool, d: Dist, passes: int = 3
) -> float:
    """img/s of the network's inference (with the pipeline's TTA and scales) on letterboxed images on the device:
    the best of `passes` passes (a GPU's launch-bound loop at 128 px varied 326-546 img/s between single passes)."""
    model.eval()
    xs = [to_input(x, mean, std, d.device) for x in images]
    for x in xs[:1]:  # warm-up
        with autocast(d.device, amp):
            task.infer(model, x, [], InferOptions(pseudo.tta, tuple(pseudo.scales)))
    best = 0.0
    for _ in range(passes):
        sync(d.device)
        t0 = time.perf_counter()
        for x in xs:
            with autocast(d.device, amp):
                task.infer(model, x, [], InferOptions(pseudo.tta, tuple(pseudo.scales)))
        sync(d.device)
        best = max(best, sum(len(x) for x in xs) / (time.perf_counter() - t0))
    return best


def setup(a: argparse.Namespace) -> tuple:
    """The set-up benchmarks/ share, from their --root, --task, --device, --size, --no-tta (and --workers): the
    device, loader processes, the shipped config of the task (TTA off with --no-tta), the pool, the task, and the
    encoder's mean and std."""
    d = Dist(device=torch.device(a.device))
    workers = loader_workers(getattr(a, "workers", None), d)
    plain = ["pseudo.tta=false", "pseudo.scales=[1.0]"] if a.no_tta else []
    rc = load_config(f"configs/fashion_{a.task}.yaml", [f"data.root={a.root}", f"data.size={a.size}", *plain])
    ds = open_dataset("voc", a.root, "train")
    task = make_task(a.task, ds.class_names, rc.model)
    mean, std = encoder_mean_std(rc.model.encoder)
    return d, workers, rc, ds, task, mean, std


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="data/fashion-scenes")
    ap.add_argument("--task", choices=["semantic", "instance"], default="semantic")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--size", type=int, default=128, help="training crop and inference side, pixels")
    ap.add_argument("--batch", type=int, default=8, help="training batch")
    ap.add_argument("--iters", type=int, default=40, help="training iterations timed")
    ap.add_argument("--pseudo-images", type=int, default=400)
    ap.add_argument("--workers", type=int, default=None, help="loader processes (default: from the machine)")
    ap.add_argument("--writers", type=int, default=None, help="pseudo-label writer threads (default: the machine's)")
    ap.add_argument("--no-tta", action="store_true", help="pseudo-label without the config's TTA and scales")
    ap.add_argument("--json", action="store_true", help="print one JSON object only")
    a = ap.parse_args()
    say = (lambda *x: print(*x, file=sys.stderr)) if a.json else print
    torch.manual_seed(0)
    d, workers, rc, ds, task, mean, std = setup(a)
    strong = TrainSet(ds, list(ds.ids)[:200], task)
    cfg = TrainConfig(iterations=a.iters, batch_size=a.batch, epoch_iters=a.iters)

    model, _ = task.build_model(ModelConfig())
    batches = Batches([strong], cfg, a.size, 0, d)
    bare = bare_train(model, [batches[it] for it in range(a.iters)], mean, std, cfg, task, d)

    def pipeline_train(iters: int) -> tuple[float, torch.nn.Module]:
        """Seconds of a whole training run of `iters` iterations, start-up included, and the trained model."""
        model, _ = task.build_model(ModelConfig())
        run_cfg = TrainConfig(iterations=iters, batch_size=a.batch, epoch_iters=iters)
        kw = dict(size=a.size, mean=mean, std=std, seed=0, resume=False, d=d, workers=workers)
        with tempfile.TemporaryDirectory() as tmp:
            sync(d.device)
            t0 = time.perf_counter()
            train(model, [strong], task, run_cfg, Path(tmp), **kw, log=lambda s: None)
            sync(d.device)
            return time.perf_counter() - t0, model

    short = max(4, a.iters // 4)
    (t_short, _), (t_full, model) = pipeline_train(short), pipeline_train(a.iters)  # pseudo-labels with the latter
    pipe, pipe_all = (a.iters - short) * a.batch / (t_full - t_short), a.iters * a.batch / t_full
    train_fixed = t_short - short * a.batch / pipe
    say(
        f"{a.task} training on {a.device} ({a.size} px, batch {a.batch}, {a.iters} it, {workers} workers): "
        f"pipeline {pipe:6.1f} img/s | bare loop {bare:6.1f} img/s | ratio {pipe / bare:.2f} "
        f"(start-up {train_fixed:.1f} s; whole run {pipe_all:.1f} img/s)"
    )

    ids = list(ds.ids)[200 : 200 + a.pseudo_images]
    pb = rc.pseudo.batch_size
    images = [
        torch.from_numpy(np.stack([letterbox(ds.load(i).image, a.size)[0] for i in ids[j : j + pb]]))
        for j in range(0, len(ids), pb)
    ]
    bare_inf = bare_infer(model, task, images, mean, std, rc.pseudo, cfg.amp, d)

    def pipeline_pseudo(some: list[str]) -> float:
        """Seconds of pseudo-labelling `some` ids into a fresh folder, start-up included."""
        with tempfile.TemporaryDirectory() as tmp:
            sync(d.device)
            t0 = time.perf_counter()
            predict_pool(
                model, task, ds, some, Path(tmp), rc.pseudo, size=a.size, mean=mean, std=std, d=d,
                workers=workers, amp=cfg.amp, writers=a.writers,
            )  # fmt: skip
            sync(d.device)
            return time.perf_counter() - t0

    few = max(pb, len(ids) // 4 // pb * pb)  # whole batches
    t_few, t_all = pipeline_pseudo(ids[:few]), pipeline_pseudo(ids)
    pipe_inf, pipe_inf_all = (len(ids) - few) / (t_all - t_few), len(ids) / t_all
    pseudo_fixed = t_few - few / pipe_inf
    say(
        f"{a.task} pseudo-labelling on {a.device} ({len(ids)} images, tta {rc.pseudo.tta}, scales "
        f"{rc.pseudo.scales}, writing them): pipeline {pipe_inf:6.1f} img/s | bare {bare_inf:6.1f} img/s | "
        f"ratio {pipe_inf / bare_inf:.2f} (start-up {pseudo_fixed:.1f} s; whole run {pipe_inf_all:.1f} img/s)"
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cpu = f"cpu ({torch.get_num_threads()} threads)"
    name = torch.cuda.get_device_name(d.device) if d.device.type == "cuda" else cpu
    figures = {
        "task": a.task,
        "device": name,
        "size": a.size,
        "batch": a.batch,
        "workers": workers,
        "writers": pool_writers(task, d) if a.writers is None else a.writers,
        "amp": bool(cfg.amp and d.device.type == "cuda"),
        "pseudo_tta": rc.pseudo.tta,
        "pseudo_scales": rc.pseudo.scales,
        "train_pipeline_img_s": round(pipe, 2),
        "train_bare_img_s": round(bare, 2),
        "train_ratio": round(pipe / bare, 3),
        "train_fixed_s": round(train_fixed, 2),
        "train_pipeline_overall_img_s": round(pipe_all, 2),
        "pseudo_pipeline_img_s": round(pipe_inf, 2),
        "pseudo_bare_img_s": round(bare_inf, 2),
        "pseudo_ratio": round(pipe_inf / bare_inf, 3),
        "pseudo_fixed_s": round(pseudo_fixed, 2),
        "pseudo_pipeline_overall_img_s": round(pipe_inf_all, 2),
        "peak_rss_mib": round(peak, 1),
    }
    say(f"peak RSS of this benchmark: {peak:.0f} MiB")
    if a.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
