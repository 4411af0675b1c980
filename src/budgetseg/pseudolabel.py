"""Run the annotation network over the unlabeled pool and stream its pseudo-labels to disk.

Folder layout (`out_dir`):
  raw/<id>.png    argmax labels of f_theta (VOC palette PNG)
  conf/<id>.png   max softmax probability, uint8 = round(255 * p)
  labels/<id>.png the pseudo-labels used for training: raw, with low-confidence pixels set to 255
  pairs/<id>.png  with pseudo.pair_margin: the runner-up class where it is within the margin of raw's, else 255
                  (g_phi is taught that either class is right there: SemanticTask.pseudo_target)
  summary.json    thresholds, kept fraction, pseudo-label quality against the ground truth of the images that
                  have it (scored_images; null figures when none do);
                  written by the pipeline last, it marks the pseudo-labels as complete
Every file is written atomically and an image whose raw PNG exists is not predicted again, so an
interrupted run resumes where it stopped. PNGs are encoded and written on threads beside the forward pass where
the machine has cores to spare (Writer), a bounded number at a time: RAM does not grow with the number of images.
"""

from __future__ import annotations

import csv
import io
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from budgetseg.config import PseudoConfig
from budgetseg.data.sample import (
    IGNORE,
    Sample,
    SegDataset,
    encode_gray_png,
    encode_label_png,
    read_image,
    read_label_png,
    unlabeled_sample,
)
from budgetseg.dist import SINGLE, Dist, barrier, gather_objects, machine_cores, shard
from budgetseg.engine.infer import predict
from budgetseg.io import atomic_open, atomic_write
from budgetseg.metrics import SemanticEvaluator


def writer_threads(device: torch.device, world: int = 1) -> int:
    """Threads for a Writer beside a loop on `device`: the cores of this rank (of `world` on the machine) that
    the loop leaves free, at most 4. On CPU torch's own threads keep theirs, often all (then 0: write in the
    loop's thread): a thread that preempts one of them stalls each of its parallel regions (measured on 2 cores:
    a forward pass 2.5x slower, and no gain in finalize either)."""
    cores = machine_cores()
    busy = torch.get_num_threads() if device.type == "cpu" else 1
    return max(0, min(4, cores // world - busy))


def pseudo_writer_threads(task, device: torch.device, world: int = 1) -> int:
    """Writer threads for `task`'s pseudo-label files: writer_threads where its writes release the GIL, else none
    (threads that hold the GIL make the loop wait to take it back after every torch call)."""
    return writer_threads(device, world) if task.writes_release_gil else 0


class Writer:
    """Runs jobs (encode and write one image's files: Pillow's PNG encoder and file writes release the GIL) on
    `threads` threads beside the caller, or in the caller's thread with threads=0.

    At most `pending` jobs are queued or running, so memory does not grow with the number of images; a job's
    error is raised in the caller's thread (by a later submit, or on leaving the with block, which waits for
    every job). One job's writes keep their order.
    """

    def __init__(self, threads: int, pending: int | None = None):
        self.pool = ThreadPoolExecutor(threads, "budgetseg-writer") if threads else None
        self.pending = pending or 4 * threads
        self.jobs: deque[Future] = deque()

    def submit(self, fn: Callable, *args) -> None:
        if self.pool is None:
            fn(*args)
            return
        while self.jobs and (len(self.jobs) >= self.pending or self.jobs[0].done()):
            self.jobs.popleft().result()
        self.jobs.append(self.pool.submit(fn, *args))

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            while exc_type is None and self.jobs:
                self.jobs.popleft().result()
        finally:  # on an error: drop the jobs not yet started, wait for the running ones
            if self.pool is not None:
                self.pool.shutdown(wait=True, cancel_futures=True)


def _write_png(path: Path, arr: np.ndarray, palette: bool) -> None:
    # no fsync per file: thousands of them would halve the throughput, and a lost file is simply recomputed
    atomic_write(path, lambda f: (encode_label_png if palette else encode_gray_png)(arr, f), fsync=False)


class ImagesOnly:
    """`ds` as pseudo-labelling reads it: the images alone. A pool image's label files, where it has them, cost
    more to decode than the image, and only measure the pseudo-labels later (finalize)."""

    def __init__(self, ds: SegDataset):
        self.ds = ds

    def load(self, image_id: str) -> Sample:
        return unlabeled_sample(image_id, read_image(self.ds.image_path(image_id)))


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
    workers: int = 0,
    amp: bool = False,
    writers: int | None = None,
) -> None:
    """Pass 1 (split across DDP ranks): predict every id the task has not written yet and let it write (on
    `writers` Writer threads; None: pseudo_writer_threads). `workers` loader processes and `amp` as in
    engine.infer.predict.

    Rank 0 alone reads which ids are left, before any rank writes, and tells the others. Batches are fixed by
    position in `ids` (batch k on rank k % world), and a batch with any image left to do is predicted whole: an
    image is always predicted in the same batch, interrupted run or not, so a resumed run writes the same bytes
    (a batch's composition changes the last bits of a forward pass)."""
    todo, b = set(gather_objects(d, task.pseudo_todo(out_dir, ids) if d.main else None)[0]), cfg.batch_size
    batches = [ids[lo : lo + b] for lo in range(0, len(ids), b)]
    mine = [i for k, batch in enumerate(batches) if k % d.world == d.rank and todo.intersection(batch) for i in batch]
    one = Dist(0, 1, d.device)  # this rank's batches are chosen above
    kw = dict(size=size, mean=mean, std=std, batch_size=b, tta=cfg.tta, scales=cfg.scales, d=one)
    progress = "pseudo-labelling" if d.main else None
    stream = predict(model, ImagesOnly(ds), mine, task, progress=progress, workers=workers, amp=amp, **kw)
    # the writer's threads start at the first image: after the loader's processes have forked
    with Writer(pseudo_writer_threads(task, d.device, d.world) if writers is None else writers) as writer:
        for sample, pred in stream:
            writer.submit(task.write_pseudo, out_dir, sample, pred)
    barrier(d)


def write_semantic(
    out_dir: Path, image_id: str, label: np.ndarray, confidence: np.ndarray, second: np.ndarray | None = None
) -> None:
    """raw/ labels, conf/ confidences and, with pseudo.pair_margin, pairs/ runner-up classes of one image, uint8
    (H, W) each (SemanticTask.decode)."""
    # conf and pairs first: a raw PNG marks the image as done, so it must be the last file written.
    _write_png(out_dir / "conf" / f"{image_id}.png", confidence, False)
    if second is not None:
        _write_png(out_dir / "pairs" / f"{image_id}.png", second, True)
    _write_png(out_dir / "raw" / f"{image_id}.png", label, True)


def class_thresholds(
    out_dir: Path, ids: list[str], num_classes: int, cfg: PseudoConfig, d: Dist = SINGLE
) -> np.ndarray:
    """(C,) confidence threshold per class: max(global threshold, the class_quantile of the confidences of the
    pixels predicted as that class). A per-class quantile keeps rare, hard classes that one global threshold
    would wipe out. Under DDP each rank counts its share of `ids` (every rank must call it)."""
    thr = np.full(num_classes, cfg.threshold or 0.0)
    if cfg.class_quantile is None:
        return thr
    hist = np.zeros(num_classes * 256, np.int64)  # (class, confidence) pixel counts, flattened
    for i in shard(ids, d):
        label = read_label_png(out_dir / "raw" / f"{i}.png")
        conf = read_label_png(out_dir / "conf" / f"{i}.png")
        hist += np.bincount(label.ravel().astype(np.int64) * 256 + conf.ravel(), minlength=len(hist))
    hist = np.sum(gather_objects(d, hist), axis=0).reshape(num_classes, 256)
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
    d: Dist = SINGLE,
) -> dict:
    """Passes 2-3: thresholds, labels/ PNGs and confidence.csv; returns the summary.

    Under DDP every rank must call it: each takes a contiguous share of `ids`, rank 0 writes confidence.csv,
    and every rank returns the summary, the same as one process's."""
    thr = class_thresholds(out_dir, ids, len(class_names), cfg, d)
    raw_eval, kept_eval = SemanticEvaluator(class_names), SemanticEvaluator(class_names)
    rows, kept, total, scored = [], 0, 0, 0
    pairs = np.zeros(4, np.int64)  # pixels with a pair; of those with ground truth: all, truth in the pair, truth first
    bar = tqdm(shard(ids, d), desc="pseudo-label masks", disable=not (progress and d.main), leave=False)
    with Writer(writer_threads(d.device, d.world)) as writer:
        for i in bar:
            label = read_label_png(out_dir / "raw" / f"{i}.png")
            conf = read_label_png(out_dir / "conf" / f"{i}.png")
            keep = conf >= np.round(thr[label] * 255)
            final = np.where(keep, label, IGNORE).astype(np.uint8)
            writer.submit(_write_png, out_dir / "labels" / f"{i}.png", final, True)
            kept, total = kept + int(keep.sum()), total + keep.size
            rows.append((i, round(float(conf.mean()) / 255, 4), round(float(keep.mean()), 4)))
            second = read_label_png(out_dir / "pairs" / f"{i}.png") if cfg.pair_margin is not None else None
            if second is not None:
                pairs[0] += int((second != IGNORE).sum())
            if not ds.has_labels(i):  # a partly labelled pool: quality only where the truth exists
                continue
            # the unlabeled images' ground truth measures pseudo-label quality; it never reaches training
            gt = ds.load(i, with_image=False).semantic
            raw_eval.process(gt, label)
            kept_eval.process(np.where(keep, gt, IGNORE), label)
            scored += 1
            if second is not None:
                m = (second != IGNORE) & (gt != IGNORE)
                pairs[1:] += [int(m.sum()), int(((gt == label) | (gt == second))[m].sum()), int((gt == label)[m].sum())]
    parts = gather_objects(d, (rows, kept, total, scored, pairs))  # in rank order: rows come back in ids' order
    rows = [r for p in parts for r in p[0]]
    kept, total, scored, pairs = (sum(p[k] for p in parts) for k in (1, 2, 3, 4))
    if d.main:
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
        "confusion": None,  # (C, C) pixel counts of the raw pseudo-labels, rows: ground truth, columns: label
        # pseudo.pair_margin: share of pixels with a pair, and of those with ground truth the share whose class is
        # one of the pair / is f_theta's first
        "paired_fraction": float(pairs[0] / total) if cfg.pair_margin is not None and total else None,
        "pair_accuracy": float(pairs[2] / pairs[1]) if pairs[1] else None,
        "pair_first_accuracy": float(pairs[3] / pairs[1]) if pairs[1] else None,
    }
    if scored:  # every rank has the same total, so all or none of them take part in the reductions
        r = raw_eval.evaluate(gather=d.world > 1)
        summary.update(
            miou=r["miou"],
            per_class_iou=r["per_class_iou"],
            confusion=r["confusion"],
            kept_pixel_accuracy=kept_eval.evaluate(gather=d.world > 1)["pixel_accuracy"],
        )
    return summary
