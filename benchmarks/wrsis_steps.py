"""Where W-RSIS's pseudo-instances go missing: given an image's IL+C counts it runs one decoder step per object, but a
step whose mask has no pixel above probability 0.5 is dropped (instance.decode.select_given), so a pool image can
get fewer pseudo-instances than it was told it holds.

For a W-RSIS pseudo-label run (`budgetseg pseudo-label ... --set model.class_inputs=true`) whose pool has ground
truth (the simulation: the counts are the truth's), runs its f_theta on every pseudo-labelled image as the pipeline
does (working resolution, the counts as the given classes) and prints, per step index, how many steps were given
and how many came out empty, and the maximum mask probability of the empty ones. Here a step is empty when no pixel
of its mask at the working resolution exceeds 0.5 (fp32); the pipeline tests after resizing the mask to the
image's own size, so a mask of a few pixels near 0.5 may count differently.

    .venv/bin/python benchmarks/wrsis_steps.py runs/cvppp_wrsis/n0006
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from budgetseg.config import load_config
from budgetseg.data.transforms import Resolution
from budgetseg.dist import Dist
from budgetseg.engine.device import to_input
from budgetseg.engine.infer import predict_loader
from budgetseg.modelfile import build_from_meta, load_model_file
from budgetseg.plan import open_pool_and_val
from budgetseg.splits import read_split
from budgetseg.task import InferOptions
from budgetseg.weak import from_dataset


@torch.no_grad()
def step_maxima(run: Path) -> list[np.ndarray]:
    """Per pseudo-labelled image with ground truth: float (T,) the maximum mask probability of each given step
    (T = the image's object count), inside the image (the canvas' padding left out)."""
    cfg = load_config(run / "config.yaml")
    if cfg.data.weak_labels:
        raise SystemExit(f"{run}: its counts came from {cfg.data.weak_labels}; this script takes them from the masks")
    path = run / "annotator" / "model.pt"
    state, meta = load_model_file(path)
    model, task = build_from_meta(path, state, meta)
    if not task.class_inputs:
        raise SystemExit(f"{path}: not a W-RSIS network (model.class_inputs is false)")
    device = Dist().device
    model.to(device).eval()
    pool = open_pool_and_val(cfg)[0]
    ids = [i for i in read_split(run / "split").unlabeled if pool.has_labels(i)]
    if not ids:
        raise SystemExit(f"{run}: no pseudo-labelled image has ground truth to take its counts from")
    weak = from_dataset(pool, ids)  # the counts the pipeline gave W-RSIS (pipeline.segmenter_rounds)
    out = []
    loader = predict_loader(pool, ids, Resolution.of_meta(meta), 1, 0, pin=False, cap=True)
    for samples, images, hws in tqdm(loader, total=len(ids), desc="W-RSIS steps"):
        x = to_input(images, tuple(meta["mean"]), tuple(meta["std"]), device)
        raw = task.infer(model, x, [samples[0].id], InferOptions(weak=weak))
        (h, w), n = hws[0], sum(weak[samples[0].id].values())
        probs = torch.sigmoid(raw["masks"][0, :n, :h, :w].float()).cpu()
        out.append(probs.flatten(1).max(1).values.numpy())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    a = ap.parse_args()
    maxima = step_maxima(a.run)
    steps = max(len(m) for m in maxima)
    given, empty = np.zeros(steps, int), np.zeros(steps, int)
    for m in maxima:
        given[: len(m)] += 1
        empty[: len(m)] += m <= 0.5
    dropped = np.concatenate([m[m <= 0.5] for m in maxima])
    print("| step | given | empty | empty % |\n|---|---|---|---|")
    for t in range(steps):
        print(f"| {t + 1} | {given[t]} | {empty[t]} | {100 * empty[t] / given[t]:.1f} |")
    q = np.quantile(dropped, [0.1, 0.5, 0.9]).round(3).tolist() if len(dropped) else None
    summary = {"images": len(maxima), "given": int(given.sum()), "empty": int(empty.sum()), "empty_max_q10_50_90": q}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
