"""Many pipeline runs: a sweep over N (plus the fully-supervised reference), skipping finished runs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from budgetseg.config import LabelMix, RunConfig, g_phi_iterations, saved_config_diff
from budgetseg.data.readers import open_split
from budgetseg.errors import BudgetsegError
from budgetseg.pipeline import run
from budgetseg.runlog import LOGGER


def reference_config(cfg: RunConfig, pool_size: int) -> RunConfig:
    """Full supervision on the whole pool, trained as long as g_phi in all (the fair upper bound for it): g_phi's
    recipe, from the ImageNet encoder, for g_phi_iterations."""
    train = dataclasses.replace(cfg.segmenter, iterations=g_phi_iterations(cfg), init="pretrained")
    off = dict(controls=False, controls_augmented=False)
    data = dataclasses.replace(cfg.data, labels=LabelMix())  # every pool image with its mask
    return dataclasses.replace(cfg, n_strong=pool_size, budget=None, annotator=train, data=data, **off)


def sweep(cfg: RunConfig, ns: list[int], out: str | Path, reference: bool = True, controls: bool = True) -> list[Path]:
    """Run the pipeline for each N into out/n<N>/ (with the longer-f_theta control, and the augmented one if
    cfg.controls_augmented, unless `controls` is False) and the reference into out/full/; returns the run folders.

    Runs whose results.json exists are skipped (refused when their config differs), interrupted ones resume.
    Annotators are cached in <parent of out>/_annotators/, so sweeps of other recipes beside this one reuse them.
    """
    out = Path(out)
    pool = open_split(cfg.data, cfg.data.train_split)
    pool_size = len(list(pool.ids)[: cfg.data.limit_pool])
    ctl = dict(controls=controls, controls_augmented=controls and cfg.controls_augmented)
    jobs = [(out / f"n{n:04d}", dataclasses.replace(cfg, n_strong=n, budget=None, **ctl)) for n in ns]
    if reference:
        jobs.append((out / "full", reference_config(cfg, pool_size)))
    for folder, c in jobs:
        if (folder / "results.json").is_file():
            keys = saved_config_diff(folder / "config.yaml", c)
            if keys:  # an edited recipe must not report the old numbers
                raise BudgetsegError(
                    f"{folder}: finished with another configuration (differs in {', '.join(keys)}); "
                    "use another --out, or delete that run"
                )
            LOGGER.info(f"sweep: {folder} is finished, skipping")
            continue
        LOGGER.info(f"sweep: running {folder} (N={c.n_strong})")
        run(c, folder, resume=True, cache_dir=out.parent / "_annotators")
    return [f for f, _ in jobs]
