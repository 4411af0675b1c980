"""How well `budgetseg export --review K` finds the pseudo-labels that need correcting, on a run whose pool has
ground truth (the simulation: fashion-scenes, VOC).

Per pseudo-labelled image with ground truth, its error: semantic, the pixels whose pseudo-label (pseudo/raw, before
the confidence cut) differs from the truth (the truth's 255 pixels left out); instance, the wrong instances: kept
pseudo-instances with no ground-truth object of their class at mask IoU >= 0.5 (one to one, the most confident
first) plus the objects none of them found. Prints the Spearman correlation of review.py's expected errors with the
share of the image that is wrong, and what share of all the errors the K images it puts first hold: against K
random images (the share K / M, on average) and the K worst (the most any K images can hold). Also the alternatives
review.py's scores were chosen against: semantic, the mean confidence over the pixels labelled foreground only;
instance, the mean instance score.

    .venv/bin/python benchmarks/review_order.py runs/faug/n0200 [--k 50,100,200]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils
from scipy.stats import spearmanr
from tqdm import tqdm

from budgetseg.config import load_config
from budgetseg.data.coco import mask_to_rle
from budgetseg.data.sample import IGNORE, read_label_png
from budgetseg.instance.pseudo import load_pseudo_labels
from budgetseg.loop.review import review_order
from budgetseg.plan import open_pool_and_val
from budgetseg.splits import read_split
from budgetseg.tasks import make_task


def semantic_errors(pool, pdir: Path, ids: list[str]) -> tuple[dict, dict, dict]:
    """id -> wrong pixels, id -> pixels with truth, id -> 1 - the mean confidence over the foreground-labelled
    pixels."""
    wrong, total, fg = {}, {}, {}
    for i in tqdm(ids, desc="semantic errors"):
        truth = pool.load(i, with_image=False).semantic
        raw, conf = read_label_png(pdir / "raw" / f"{i}.png"), read_label_png(pdir / "conf" / f"{i}.png")
        known = truth != IGNORE
        wrong[i], total[i] = int(((raw != truth) & known).sum()), int(known.sum())
        fg[i] = 1 - float(conf[raw > 0].mean()) / 255 if (raw > 0).any() else 1.0
    return wrong, total, fg


def instance_errors(pool, preds: dict, ids: list[str]) -> tuple[dict, dict]:
    """id -> wrong instances (false positives + missed objects at IoU 0.5), id -> objects + kept predictions."""
    wrong, total = {}, {}
    for i in tqdm(ids, desc="instance errors"):
        s = pool.load(i, with_image=False)
        gts = [mask_to_rle(m) for m in s.instance_masks]
        kept = [(rle, c) for rle, c, crowd, _ in preds[i] if not crowd]  # most confident first
        free = [True] * len(gts)
        if kept and gts:
            iou = mask_utils.iou([r for r, _ in kept], gts, [0] * len(gts))
        matched = 0
        for k, (_, c) in enumerate(kept):
            best = [(iou[k, g], g) for g in range(len(gts)) if free[g] and s.instance_classes[g] == c]
            best = max(best, default=(0.0, -1))
            if best[0] >= 0.5:
                free[best[1]], matched = False, matched + 1
        wrong[i] = len(kept) - matched + sum(free)
        total[i] = max(len(gts) + len(kept), 1)
    return wrong, total


def report(name: str, score: dict, wrong: dict, total: dict, ks: list[int], rng) -> None:
    ids = list(score)
    share = np.array([wrong[i] / total[i] for i in ids])
    rho = spearmanr([score[i] for i in ids], share).statistic
    errors = np.array([wrong[i] for i in ids], float)
    pos = {i: k for k, i in enumerate(ids)}
    order = [pos[i] for i in review_order(score)]
    worst = np.sort(errors)[::-1]
    print(f"{name}: Spearman(expected errors, share wrong) = {rho:+.3f} over {len(ids)} images")
    for k in ks:
        least = errors[order[:k]].sum() / errors.sum()
        rand = np.mean([errors[rng.choice(len(ids), k, replace=False)].sum() for _ in range(200)]) / errors.sum()
        best = worst[:k].sum() / errors.sum()
        print(
            f"  K = {k:4d}: the first K hold {100 * least:5.1f} % of the errors, K random {100 * rand:5.1f} %, "
            f"the K worst {100 * best:5.1f} %; share wrong in the first K {share[order[:k]].mean():.3f} "
            f"against {share.mean():.3f} over all"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--k", default="50,100,200", help="comma-separated K values")
    a = ap.parse_args()
    cfg = load_config(a.run / "config.yaml")
    pool = open_pool_and_val(cfg)[0]
    pdir = a.run / "pseudo"
    ids = [i for i in read_split(a.run / "split").unlabeled if pool.has_labels(i)]
    ks = [int(k) for k in a.k.split(",") if int(k) < len(ids)]
    rng = np.random.default_rng(0)
    labels = make_task(cfg.task, pool.class_names, cfg.model, background=pool.background).pseudo_labels(pdir)
    score = labels.review_scores(ids)
    if cfg.task == "semantic":
        wrong, total, fg = semantic_errors(pool, pdir, ids)
        report("1 - mean pixel confidence (review.py)", score, wrong, total, ks, rng)
        report("1 - mean confidence over the foreground-labelled pixels", fg, wrong, total, ks, rng)
    else:
        preds = load_pseudo_labels(pdir / "pseudo_labels.json")
        wrong, total = instance_errors(pool, preds, ids)
        report("expected wrong instances, sum(1 - score) (review.py)", score, wrong, total, ks, rng)
        mean = {i: 1 - sum(s for *_, s in preds[i]) / len(preds[i]) if preds[i] else 1.0 for i in ids}
        report("1 - mean instance score", mean, wrong, total, ks, rng)
    summary = {"run": str(a.run), "task": cfg.task, "images": len(ids), "errors": int(sum(wrong.values()))}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
