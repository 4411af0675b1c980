"""Where pseudo-labelling's main thread spends its time: predict_pool on a trained-for-a-moment network under
cProfile, the top functions by own time printed. Waiting shows up as lock acquires (the loader's queue, a full
writer queue) and CUDA event synchronisation (the device still busy); the rest is the main thread's own work.

    GLIBC_TUNABLES=... .venv/bin/python benchmarks/profile_pseudo.py [--task semantic|instance] [--device cpu|cuda]
        [--size 128] [--images 800] [--no-tta] [--top 25]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from pathlib import Path

import torch
from throughput import setup  # benchmarks/ is on the path when this script runs

from budgetseg.config import ModelConfig, TrainConfig
from budgetseg.engine.batches import TrainSet
from budgetseg.engine.train import train
from budgetseg.pseudo import predict_pool


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="data/fashion-scenes")
    ap.add_argument("--task", choices=["semantic", "instance"], default="semantic")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--images", type=int, default=800)
    ap.add_argument("--writers", type=int, default=None, help="pseudo-label writer threads (default: the machine's)")
    ap.add_argument("--no-tta", action="store_true")
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args()
    torch.manual_seed(0)
    d, workers, rc, ds, task, mean, std = setup(a)
    model, _ = task.build_model(ModelConfig())
    cfg = TrainConfig(iterations=20, batch_size=8, epoch_iters=20)  # predictions shaped like a trained net's
    kw = dict(size=a.size, mean=mean, std=std, seed=0, resume=False, d=d, workers=workers)
    with tempfile.TemporaryDirectory() as tmp:
        train(model, [TrainSet(ds, list(ds.ids)[:200], task)], task, cfg, Path(tmp), **kw, log=lambda s: None)
    ids = list(ds.ids)[200 : 200 + a.images]
    with tempfile.TemporaryDirectory() as tmp:
        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.enable()
        predict_pool(
            model, task, ds, ids, Path(tmp), rc.pseudo, size=a.size, mean=mean, std=std, d=d, workers=workers,
            amp=cfg.amp, writers=a.writers,
        )  # fmt: skip
        prof.disable()
        secs = time.perf_counter() - t0
    print(f"{a.task} pseudo-labelling on {a.device}: {len(ids)} images in {secs:.2f} s ({len(ids) / secs:.1f} img/s)")
    pstats.Stats(prof).sort_stats("tottime").print_stats(a.top)


if __name__ == "__main__":
    main()
