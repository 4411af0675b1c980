"""Run the annotation network over the unlabeled pool and stream its pseudo-labels to disk.

Folder layout (`out_dir`):
  raw/<id>.png    argmax labels of f_theta (VOC palette PNG)
  conf/<id>.png   max softmax probability, uint8 = round(255 * p)
  labels/<id>.png the pseudo-labels used for training: raw, with low-confidence pixels set to 255
  summary.json    thresholds, kept fraction, pseudo-label quality against the ground truth of the images that
                  have it (scored_images; null figures when none do);
                  written by the pipeline last, it marks the pseudo-labels as complete
Every file is written atomically and an image whose raw PNG exists is not predicted again, so an
interrupted run resumes where it stopped. RAM does not grow with the number of images.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from budgetseg.config import PseudoConfig
from budgetseg.data.sample import IGNORE, SegDataset, encode_label_png, read_label_png
from budgetseg.engine import SINGLE, Dist, barrier, predict
from budgetseg.io import atomic_open, atomic_write
from budgetseg.metrics import SemanticEvaluator


def _write_png(path: Path, arr: np.ndarray, palette: bool) -> None:
    # no fsync per file: thousands of them would halve the throughput, and a lost file is simply recomputed
    if palette:
        atomic_write(path, lambda f: encode_label_png(arr, f), fsync=False)
    else:
        atomic_write(path, lambda f: Image.fromarray(arr, mode="L").save(f, format="PNG"), fsync=False)


def predict_pool(
    model,
    task,
    ds: SegDataset,
    ids: list[str],
    out_dir: Path,
    cfg: PseudoConfig,
    *,
    size: int,
    mean: tuple,
    std: tuple,
    d: Dist = SINGLE,
) -> None:
    """Pass 1 (split across DDP ranks): predict every id the task has not written yet and let it write.

    Batches are fixed by position in `ids` (batch k on rank k % world), and a batch with any image left to do is
    predicted whole: an image is always predicted in the same batch, interrupted run or not, so a resumed run
    writes the same bytes (a batch's composition changes the last bits of a forward pass)."""
    todo, b = set(task.pseudo_todo(out_dir, ids)), cfg.batch_size
    batches = [ids[lo : lo + b] for lo in range(0, len(ids), b)]
    mine = [i for k, batch in enumerate(batches) if k % d.world == d.rank and todo.intersection(batch) for i in batch]
    one = Dist(0, 1, d.device)  # this rank's batches are chosen above
    kw = dict(size=size, mean=mean, std=std, batch_size=b, tta=cfg.tta, scales=cfg.scales, d=one)
    for sample, pred in predict(model, ds, mine, task, progress="pseudo-labelling" if d.main else None, **kw):
        task.write_pseudo(out_dir, sample, pred)
    barrier(d)


def write_semantic(out_dir: Path, image_id: str, probs: torch.Tensor) -> None:
    """raw/ labels and conf/ confidences of one image from its probabilities (C, H, W)."""
    conf, label = probs.max(0)
    # conf first: a raw PNG marks the image as done, so it must be the last file written.
    _write_png(out_dir / "conf" / f"{image_id}.png", np.round(conf.numpy() * 255).astype(np.uint8), False)
    _write_png(out_dir / "raw" / f"{image_id}.png", label.numpy().astype(np.uint8), True)


def class_thresholds(out_dir: Path, ids: list[str], num_classes: int, cfg: PseudoConfig) -> np.ndarray:
    """(C,) confidence threshold per class: max(global threshold, the class_quantile of the confidences of the
    pixels predicted as that class). A per-class quantile keeps rare, hard classes that one global threshold
    would wipe out."""
    thr = np.full(num_classes, cfg.threshold or 0.0)
    if cfg.class_quantile is None:
        return thr
    hist = np.zeros((num_classes, 256), np.int64)
    for i in ids:
        label = read_label_png(out_dir / "raw" / f"{i}.png")
        conf = read_label_png(out_dir / "conf" / f"{i}.png")
        np.add.at(hist, (label.ravel(), conf.ravel()), 1)
    for c in range(num_classes):
        total = hist[c].sum()
        if total:
            b = int(np.searchsorted(np.cumsum(hist[c]), cfg.class_quantile * total, side="left"))
            thr[c] = max(thr[c], b / 255.0)
    return thr


def finalize(
    out_dir: Path,
    ds: SegDataset,
    ids: list[str],
    class_names: list[str],
    cfg: PseudoConfig,
    progress: bool = True,
) -> dict:
    """Passes 2-3 (one process): thresholds, labels/ PNGs and confidence.csv; returns the summary."""
    thr = class_thresholds(out_dir, ids, len(class_names), cfg)
    raw_eval, kept_eval = SemanticEvaluator(class_names), SemanticEvaluator(class_names)
    rows, kept, total, scored = [], 0, 0, 0
    for i in tqdm(ids, desc="pseudo-label masks", disable=not progress, leave=False):
        label = read_label_png(out_dir / "raw" / f"{i}.png")
        conf = read_label_png(out_dir / "conf" / f"{i}.png")
        keep = conf >= np.round(thr[label] * 255)
        final = np.where(keep, label, IGNORE).astype(np.uint8)
        _write_png(out_dir / "labels" / f"{i}.png", final, True)
        kept, total = kept + int(keep.sum()), total + keep.size
        rows.append((i, round(float(conf.mean()) / 255, 4), round(float(keep.mean()), 4)))
        if not ds.has_labels(i):  # a partly labelled pool: quality only where the truth exists
            continue
        # the unlabeled images' ground truth measures pseudo-label quality; it never reaches training
        gt = ds.load(i, with_image=False).semantic
        raw_eval.process(gt, label)
        kept_eval.process(np.where(keep, gt, IGNORE), label)
        scored += 1
    buf = io.StringIO()
    csv.writer(buf).writerows([("id", "mean_confidence", "kept_fraction"), *rows])
    with atomic_open(out_dir / "confidence.csv", "w") as f:
        f.write(buf.getvalue())
    summary = {
        "images": len(ids),
        "thresholds": {n: round(float(t), 4) for n, t in zip(class_names, thr, strict=True)},
        "kept_fraction": kept / total if total else None,
        "mean_confidence": float(np.mean([r[1] for r in rows])) if rows else None,
        "scored_images": scored,  # unlabeled images with ground truth, which the quality figures are measured on
        "miou": None,
        "per_class_iou": None,
        "kept_pixel_accuracy": None,
    }
    if scored:
        r = raw_eval.evaluate(gather=False)  # finalize runs on rank 0 alone
        summary.update(
            miou=r["miou"],
            per_class_iou=r["per_class_iou"],
            kept_pixel_accuracy=kept_eval.evaluate(gather=False)["pixel_accuracy"],
        )
    return summary
