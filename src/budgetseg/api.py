"""The public API, as `budgetseg.<name>` (imported on first use, so that `import budgetseg` stays light): each
function is what one CLI command does, without the printing.

    import budgetseg
    results = budgetseg.run("configs/fashion_semantic.yaml", "runs/fs", overrides=["n_strong=50"])
    segment = budgetseg.load_model("runs/fs")
    label_map = segment(image)  # uint8 (H, W, 3) -> uint8 (H, W) class ids (semantic) or instances
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from budgetseg.config import TTA_SCALES, RunConfig, load_config


def _config(config: str | Path | RunConfig, overrides: Sequence[str]) -> RunConfig:
    if isinstance(config, RunConfig):
        return load_config(None, list(overrides)) if overrides else config
    return load_config(config, list(overrides))


def run(config: str | Path | RunConfig, out: str | Path, overrides: Sequence[str] = (), resume: bool = False) -> dict:
    """The pipeline (f_theta on the strong images -> pseudo-labels -> g_phi -> evaluation) into the run folder
    `out`, as `budgetseg run CONFIG --out OUT --set KEY=VALUE ...`; resume: continue an interrupted run there.
    Returns results.json's object. config: a YAML file or a RunConfig (then `overrides` apply to the defaults)."""
    from budgetseg.pipeline import run as run_pipeline

    return run_pipeline(_config(config, overrides), out, resume=resume)


def sweep(
    config: str | Path | RunConfig,
    out: str | Path,
    ns: Sequence[int],
    overrides: Sequence[str] = (),
    reference: bool = True,
    controls: bool = True,
) -> dict:
    """The pipeline for each N of `ns` (out/n<N>/), the fully-supervised reference (out/full/) unless not
    `reference`, then the report (out/report/), as `budgetseg sweep`; returns the report (its "table", "rows",
    "files")."""
    from budgetseg.experiments.report import report
    from budgetseg.experiments.sweep import sweep as sweep_runs

    runs = sweep_runs(_config(config, overrides), list(ns), out, reference=reference, controls=controls)
    return report(runs, Path(out) / "report")


def select(images: str | Path, n: int, strategy: str = "random", seed: int = 0) -> list[str]:
    """The ids (file stems) of the `n` images of the folder `images` to label first: diverse (core-set on encoder
    features) or random, as `budgetseg select --images`."""
    from budgetseg.data.pool import ImageFolder
    from budgetseg.loop.select import select as select_ids

    return select_ids(ImageFolder(Path(images)), n, strategy, seed)


def predict(
    model: str | Path,
    inputs: Sequence[str | Path],
    out: str | Path,
    net: str | None = None,
    device: str | None = None,
    tta: bool = False,
    scales: tuple[float, ...] = TTA_SCALES,
    stop_threshold: float | None = None,
) -> dict:
    """The network of a run folder or model.pt on image files or folders, its label maps (or COCO results) and
    overlays written into the new folder `out`, as `budgetseg predict`; returns its summary. stop_threshold: an
    instance network's instead of its own."""
    from budgetseg.loop.predict import predict_images

    kw = dict(net=net, device=device, progress=False, tta=tta, scales=scales, stop_threshold=stop_threshold)
    return predict_images(model, list(inputs), out, **kw)


def export(run: str | Path, to: str, out: str | Path, review: int | None = None) -> dict:
    """A run's strong labels and pseudo-labels as `to` (cvat | coco | labelstudio | html) in the new folder `out`
    for correction, with `review` only that many pseudo-labels (the likeliest wrong), as `budgetseg export`;
    returns its summary."""
    from budgetseg.loop.export import export_run

    return export_run(run, to, out, review=review)


def advise(
    sources: Sequence[str | Path],
    budget: str | None = None,
    target: str | float | None = None,
    hours_per_day: float = 24.0,
    noise: float = 0.01,
) -> dict:
    """Learning curves fitted to finished runs (run or sweep folders, report/compare.json): what `budget` buys
    with each strategy, or what it takes to reach `target`; the advice object of `budgetseg advise --json`.
    noise: one run's metric noise (a fraction; `--noise` in points)."""
    from budgetseg.experiments.advise import advise as advise_curves

    return advise_curves([Path(s) for s in sources], budget, target, hours_per_day, noise=noise)


class Predictor:
    """A trained network in memory: `predictor(image)` with image uint8 (H, W, 3) RGB returns a uint8 (H, W) map of
    class ids (semantic) or a list of (mask bool (H, W), class id, score) instances, as `budgetseg predict` would
    predict that image (working resolution, sliding windows, test-time augmentation where asked for)."""

    def __init__(self, source: str | Path, net: str | None, device: str | None, tta: bool, scales, stop_threshold=None):
        import torch

        from budgetseg.data.transforms import Resolution
        from budgetseg.loop.predict import load_trained
        from budgetseg.modelfile import check_tta

        trained = load_trained(source, net, stop_threshold)
        scales = tuple(scales) if tta else (1.0,)
        check_tta(trained.path, trained.meta, tta, scales)
        meta = trained.meta
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model, self.task, self.class_names = trained.model.to(self.device), trained.task, list(meta["class_names"])
        self.size = Resolution.of_meta(meta)
        self.mean, self.std = tuple(meta["mean"]), tuple(meta["std"])
        self.tta, self.scales = tta, scales

    def __call__(self, image: np.ndarray) -> Any:
        from budgetseg.data.pool import InMemory
        from budgetseg.dist import Dist
        from budgetseg.engine.infer import predict as infer
        from budgetseg.task import InferOptions

        ds = InMemory(np.asarray(image), self.class_names)
        kw = dict(size=self.size, mean=self.mean, std=self.std, batch_size=1, d=Dist(device=self.device))
        ((_, prediction),) = infer(self.model, ds, ds.ids, self.task, options=InferOptions(self.tta, self.scales), **kw)
        return self.task.result(prediction)


def load_model(
    source: str | Path,
    net: str | None = None,
    device: str | None = None,
    tta: bool = False,
    scales: tuple[float, ...] = TTA_SCALES,
    stop_threshold: float | None = None,
) -> Callable[[np.ndarray], Any]:
    """The network of a run folder (its segmenter, or `net`) or of a model.pt as a Predictor: image array in,
    label map (semantic) or instances out. device: default cuda where a GPU is visible, else cpu. stop_threshold:
    an instance network's instead of its own (model.stop_threshold)."""
    return Predictor(source, net, device, tta, scales, stop_threshold)
