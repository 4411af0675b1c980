"""Semantic pseudo-labels: the folder f_theta's predictions of the unlabeled pool are written to and read from. This
module alone knows its files (the pipeline, training, the export and the review order read them through
SemanticPseudoLabels).

Folder layout (`folder`, RUN/pseudo):
  raw/<id>.png    argmax labels of f_theta (VOC palette PNG)
  conf/<id>.png   max softmax probability, uint8 = round(255 * p)
  labels/<id>.png the pseudo-labels used for training: raw, with low-confidence pixels set to 255
  pairs/<id>.png  with pseudo.pair_margin: the runner-up class where it is within the margin of raw's, else 255
                  (g_phi is taught that either class is right there: SemanticPseudoLabels.target)
  confidence.csv  id, mean confidence, kept fraction of every image
  summary.json    thresholds, kept fraction, pseudo-label quality against the ground truth of the images that
                  have it (scored_images; null figures when none do);
                  written by the pipeline last, it marks the pseudo-labels as complete
Every file is written atomically and an image whose raw PNG exists is not predicted again, so an interrupted run
resumes where it stopped. PNGs are encoded and written on threads beside the forward pass where the machine has
cores to spare (engine.writer.Writer).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
from tqdm import tqdm

from budgetseg.config import PseudoConfig
from budgetseg.data.sample import (
    IGNORE,
    Sample,
    SegDataset,
    encode_gray_png,
    encode_label_png,
    image_size,
    read_label_png,
)
from budgetseg.dist import SINGLE, Dist, gather_objects, shard
from budgetseg.engine.writer import Writer, writer_threads
from budgetseg.errors import input_error
from budgetseg.io import atomic_open, atomic_write
from budgetseg.semantic.metrics import SemanticEvaluator
from budgetseg.semantic.outputs import SemanticItem


def _write_png(path: Path, arr: np.ndarray, palette: bool) -> None:
    # no fsync per file: thousands of them would halve the throughput, and a lost file is simply recomputed
    atomic_write(path, lambda f: (encode_label_png if palette else encode_gray_png)(arr, f), fsync=False)


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


@dataclass
class _Tally:
    """What finalize counts over this rank's images."""

    raw_eval: SemanticEvaluator
    kept_eval: SemanticEvaluator
    rows: list = field(default_factory=list)  # (id, mean confidence, kept fraction)
    kept: int = 0
    total: int = 0
    scored: int = 0
    pairs: np.ndarray = field(default_factory=lambda: np.zeros(4, np.int64))  # pixels with a pair; of those with
    # ground truth: all, truth in the pair, truth first


def _label_image(folder: Path, ds: SegDataset, i: str, thr: np.ndarray, paired: bool, writer: Writer, t: _Tally):
    """labels/<i>.png from raw/ and conf/ by the thresholds `thr` (C,), counted into `t`; scored where `ds` has i's
    ground truth (it measures the pseudo-labels and never reaches training)."""
    label = read_label_png(folder / "raw" / f"{i}.png")
    conf = read_label_png(folder / "conf" / f"{i}.png")
    keep = conf >= np.round(thr[label] * 255)
    final = np.where(keep, label, IGNORE).astype(np.uint8)
    writer.submit(_write_png, folder / "labels" / f"{i}.png", final, True)
    t.kept, t.total = t.kept + int(keep.sum()), t.total + keep.size
    t.rows.append((i, round(float(conf.mean()) / 255, 4), round(float(keep.mean()), 4)))
    second = read_label_png(folder / "pairs" / f"{i}.png") if paired else None
    if second is not None:
        t.pairs[0] += int((second != IGNORE).sum())
    if not ds.has_labels(i):  # a partly labelled pool: quality only where the truth exists
        return
    gt = ds.load(i, with_image=False).semantic
    t.raw_eval.process(gt, label)
    t.kept_eval.process(np.where(keep, gt, IGNORE), label)
    t.scored += 1
    if second is not None:
        m = (second != IGNORE) & (gt != IGNORE)
        t.pairs[1:] += [int(m.sum()), int(((gt == label) | (gt == second))[m].sum()), int((gt == label)[m].sum())]


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
    t = _Tally(SemanticEvaluator(class_names), SemanticEvaluator(class_names))
    bar = tqdm(shard(ids, d), desc="pseudo-label masks", disable=not (progress and d.main), leave=False)
    with Writer(writer_threads(d.device, d.world)) as writer:
        for i in bar:
            _label_image(out_dir, ds, i, thr, cfg.pair_margin is not None, writer, t)
    parts = gather_objects(d, (t.rows, t.kept, t.total, t.scored, t.pairs))  # rank order: rows in ids' order
    rows = [r for p in parts for r in p[0]]
    kept, total, scored, pairs = (sum(p[k] for p in parts) for k in (1, 2, 3, 4))
    if d.main:
        buf = io.StringIO()
        csv.writer(buf).writerows([("id", "mean_confidence", "kept_fraction"), *rows])
        with atomic_open(out_dir / "confidence.csv", "w") as f:
            f.write(buf.getvalue())
    summary = {
        "images": len(ids),
        "thresholds": {n: round(float(v), 4) for n, v in zip(class_names, thr, strict=True)},
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
        r = t.raw_eval.evaluate(gather=d.world > 1)
        summary.update(
            miou=r["miou"],
            per_class_iou=r["per_class_iou"],
            confusion=r["confusion"],
            kept_pixel_accuracy=t.kept_eval.evaluate(gather=d.world > 1)["pixel_accuracy"],
        )
    return summary


@dataclass(frozen=True)
class SemanticPseudoLabels:
    """The semantic pseudo-label folder `folder` of a label set `class_names` (background: class 0 is one)."""

    folder: Path
    class_names: list[str]
    background: bool = True
    score_name: ClassVar[str] = "share of pixels expected wrong: 1 - mean confidence"
    writes_release_gil: ClassVar[bool] = True  # Pillow's PNG encoder and file writes release it

    def todo(self, ids: list[str]) -> list[str]:
        return [i for i in ids if not (self.folder / "raw" / f"{i}.png").is_file()]

    def write(self, sample: Sample, prediction) -> None:
        """raw/, conf/ and (with pairs) pairs/ of a SemanticPrediction."""
        write_semantic(self.folder, sample.id, prediction.label, prediction.confidence, prediction.second)

    def finalize(self, ds: SegDataset, ids: list[str], cfg: PseudoConfig, d: Dist = SINGLE) -> dict:
        return finalize(self.folder, ds, ids, self.class_names, cfg, d=d)

    def target(self, image_id: str, size: tuple[int, int]) -> np.ndarray:
        """uint8 (H, W): labels/; with pairs/ (pseudo.pair_margin) (H, W, 2): where a pixel has a pair, f_theta's
        class and the runner-up, whatever the class quantile dropped; elsewhere labels/ and 255."""
        labels = read_label_png(self.folder / "labels" / f"{image_id}.png")
        if not (self.folder / "pairs" / f"{image_id}.png").is_file():
            return labels
        second = read_label_png(self.folder / "pairs" / f"{image_id}.png")
        raw = read_label_png(self.folder / "raw" / f"{image_id}.png")
        return np.stack([np.where(second != IGNORE, raw, labels), second], axis=-1)

    def review_scores(self, ids: list[str]) -> dict[str, float]:
        """The share of each image's pixels expected wrong: 1 - the mean of its confidence map (f_theta's top class
        probability per pixel)."""
        out = {}
        for i in ids:
            path = self.folder / "conf" / f"{i}.png"
            if not path.is_file():
                raise input_error(path, "confidence map is missing (pseudo-labels made by an older budgetseg?)")
            out[i] = round(1 - float(read_label_png(path).mean()) / 255, 5)
        return out

    def export_item(self, pool: SegDataset, image_id: str) -> SemanticItem:
        """labels/ (255 = low confidence) and the confidence map, where there is one."""
        image = pool.image_path(image_id)
        size = image_size(image)
        label_path = self.folder / "labels" / f"{image_id}.png"
        semantic = read_label_png(label_path)
        if semantic.shape != size:
            raise input_error(label_path, f"pseudo-label is {semantic.shape[::-1]} (WxH) but {image} is {size[::-1]}")
        conf_path = self.folder / "conf" / f"{image_id}.png"
        conf = read_label_png(conf_path).astype(np.float32) / 255 if conf_path.is_file() else None
        first = 1 if self.background else 0
        return SemanticItem(image_id, "pseudo", image, semantic, first=first, confidence=conf)
