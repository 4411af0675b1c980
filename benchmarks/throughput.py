"""Training and pseudo-labelling throughput of the pipeline next to a bare loop of the same model on the same
batches, and the peak memory of a whole run, for either task. Prints figures; asserts nothing.

    GLIBC_TUNABLES=... .venv/bin/python benchmarks/throughput.py [--task semantic|instance] [--iters 40]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from budgetseg.config import ModelConfig, PseudoConfig, TrainConfig
from budgetseg.data.readers import open_dataset
from budgetseg.data.transforms import letterbox
from budgetseg.engine import batch_plan, make_batch, make_optimizer, to_input, train
from budgetseg.pipeline import load_trainset
from budgetseg.pseudolabel import predict_pool
from budgetseg.tasks import encoder_mean_std, make_task


def bare_train(model, batches, mean, std, cfg: TrainConfig, task) -> float:
    """img/s of forward + backward + step on pre-made batches: the ceiling for the pipeline."""
    model.train().to(memory_format=torch.channels_last)
    opt = make_optimizer(model, cfg)
    t0, n = None, 0
    for i, (images, targets, weights) in enumerate(batches):
        if i == 2:  # the first steps allocate; time the rest, as the pipeline's figure includes them too
            t0, n = time.perf_counter(), 0
        x = to_input(images, mean, std, torch.device("cpu"))
        loss = task.loss(task.forward(model, x, targets), targets, weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += len(images)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="data/fashion-scenes")
    ap.add_argument("--iters", type=int, default=40)
    ap.add_argument("--pseudo-images", type=int, default=400)
    ap.add_argument("--task", choices=["semantic", "instance"], default="semantic")
    ap.add_argument("--skip-memory", action="store_true")
    a = ap.parse_args()
    torch.manual_seed(0)
    ds = open_dataset("voc", a.root, "train")
    task = make_task(a.task, ds.class_names)
    config = f"configs/fashion_{a.task}.yaml"
    mean, std = encoder_mean_std("tf_efficientnet_lite0")
    strong = load_trainset(ds, list(ds.ids)[:200], task)
    cfg = TrainConfig(iterations=a.iters, batch_size=8, epoch_iters=a.iters)
    size = 128

    model, _ = task.build_model(ModelConfig())
    batches = [make_batch([strong], batch_plan([strong], 8, it, None), cfg, size, 0) for it in range(a.iters)]
    bare = bare_train(model, batches, mean, std, cfg, task)

    model, _ = task.build_model(ModelConfig())
    with tempfile.TemporaryDirectory() as tmp:
        timing = train(
            model,
            [strong],
            task.loss,
            cfg,
            Path(tmp),
            size=size,
            mean=mean,
            std=std,
            seed=0,
            resume=False,
            log=lambda s: None,
            forward=task.forward,
        )
    pipe = timing["images_per_second"]
    print(
        f"{a.task} training (128 px, batch 8, {a.iters} it): pipeline {pipe:6.1f} img/s | "
        f"bare loop {bare:6.1f} img/s | "
        f"ratio {pipe / bare:.2f}"
    )

    ids = list(ds.ids)[200 : 200 + a.pseudo_images]
    model.eval()
    with torch.no_grad():  # bare forward passes on the same images, pre-loaded and letterboxed
        imgs = [
            torch.from_numpy(np.stack([letterbox(ds.load(i).image, size)[0] for i in ids[j : j + 16]]))
            for j in range(0, len(ids), 16)
        ]
        t0 = time.perf_counter()
        for x in imgs:
            task.infer(model, to_input(x, mean, std, torch.device("cpu")))
        bare_inf = len(ids) / (time.perf_counter() - t0)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        predict_pool(model, task, ds, ids, Path(tmp), PseudoConfig(), size=size, mean=mean, std=std)
        pipe_inf = len(ids) / (time.perf_counter() - t0)
    print(
        f"{a.task} pseudo-labelling ({len(ids)} images, writing them): pipeline {pipe_inf:6.1f} img/s | bare forward "
        f"{bare_inf:6.1f} img/s | ratio {pipe_inf / bare_inf:.2f}"
    )

    if not a.skip_memory:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [
                sys.executable,
                "-m",
                "budgetseg.cli",
                "run",
                config,
                "--out",
                f"{tmp}/run",
                "--set",
                f"data.root={a.root}",
                "--set",
                "annotator.iterations=20",
                "--set",
                "segmenter.iterations=20",
            ]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(
            f"peak memory of a {a.task} run (N=200 strong + 1800 pseudo-labelled images in RAM, 20 iterations each): "
            f"{peak:.0f} MiB RSS ({time.perf_counter() - t0:.0f} s)"
        )


if __name__ == "__main__":
    main()
