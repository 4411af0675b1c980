"""Evaluators with one interface (reset / process / evaluate -> {"metric": value}), so one loop serves all."""

from __future__ import annotations

import numpy as np
import torch


def reduce_device() -> torch.device:
    """Where the default process group reduces tensors: NCCL takes CUDA tensors only (on this rank's GPU, which
    dist.init_distributed selects), gloo CPU ones."""
    if "nccl" in str(torch.distributed.get_backend()):
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _int64(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    """An int64 tensor copy of an integer array or tensor (a numpy view may be read-only)."""
    return torch.from_numpy(x.astype(np.int64)) if isinstance(x, np.ndarray) else x.long()


class ConfusionMatrix:
    """Accumulates a (C, C) confusion matrix (rows: ground truth, columns: prediction) with bincount."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.mat = torch.zeros((num_classes, num_classes), dtype=torch.int64)

    CHUNK = 1 << 22  # pixels counted at a time: int64 copies of a huge image's maps would take 8 bytes a pixel

    def update(self, target: torch.Tensor | np.ndarray, pred: torch.Tensor | np.ndarray) -> None:
        """target, pred: integer arrays or tensors of one shape; target pixels outside [0, C) (e.g. 255) are skipped."""
        n = self.num_classes
        target, pred = target.reshape(-1), pred.reshape(-1)
        for lo in range(0, len(target), self.CHUNK):
            t, p = (_int64(x[lo : lo + self.CHUNK]) for x in (target, pred))
            keep = (t >= 0) & (t < n)
            self.mat += torch.bincount(n * t[keep] + p[keep], minlength=n * n).reshape(n, n).cpu()

    def reduce(self) -> None:
        """Sum over DDP ranks (no-op when not distributed)."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            mat = self.mat.to(reduce_device())
            torch.distributed.all_reduce(mat)
            self.mat = mat.cpu()

    def iou(self) -> np.ndarray:
        """(C,) IoU per class; NaN for a class absent from both ground truth and prediction."""
        m = self.mat.double()
        inter = m.diag()
        union = m.sum(0) + m.sum(1) - inter
        return torch.where(union > 0, inter / union.clamp(min=1), torch.nan).numpy()

    def pixel_accuracy(self) -> float | None:
        """Share of labelled pixels predicted right; None without a labelled pixel."""
        total = self.mat.sum().item()
        return float(self.mat.diag().sum().item() / total) if total else None


def row_shares(confusion) -> np.ndarray:
    """(C, C) pixel counts -> each ground-truth row as shares of its pixels (a row without pixels stays 0)."""
    m = np.asarray(confusion, float)
    return m / np.maximum(m.sum(1, keepdims=True), 1.0)


def top_confusions(confusion, class_names: list[str], k: int = 3) -> list[dict]:
    """The k largest off-diagonal shares: {"truth", "predicted", "share" (of the truth class's pixels)}."""
    share = row_shares(confusion)
    np.fill_diagonal(share, 0.0)
    order = np.argsort(-share, axis=None, kind="stable")[:k]
    pairs = [np.unravel_index(i, share.shape) for i in order]
    return [
        {"truth": class_names[t], "predicted": class_names[p], "share": round(float(share[t, p]), 4)}
        for t, p in pairs
        if share[t, p] > 0
    ]


def confusions_text(pairs: list[dict]) -> str:
    """top_confusions as one line: "shirt -> coat 36 %, ..." ("none" without a confusion)."""
    return ", ".join(f"{p['truth']} -> {p['predicted']} {100 * p['share']:.0f} %" for p in pairs) or "none"


class SemanticEvaluator:
    """mIoU (mean over classes present in ground truth or prediction), per-class IoU, pixel accuracy and the
    confusion matrix (pixel counts, rows: ground truth, columns: prediction; the report plots it)."""

    def __init__(self, class_names: list[str]):
        self.class_names = class_names
        self.reset()

    def reset(self) -> None:
        self.cm = ConfusionMatrix(len(self.class_names))

    def process(self, target: torch.Tensor | np.ndarray, pred: torch.Tensor | np.ndarray) -> None:
        """target: (H, W) or (B, H, W) labels with 255 = ignore; pred: same shape, class ids."""
        self.cm.update(target, pred)

    def evaluate(self, gather: bool = True) -> dict:
        """gather: under DDP, sum every rank's counts first (all ranks must call it then)."""
        if gather:
            self.cm.reduce()
        iou = self.cm.iou()
        res = {
            "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else None,
            "pixel_accuracy": self.cm.pixel_accuracy(),
            "per_class_iou": {
                n: (None if np.isnan(v) else float(v)) for n, v in zip(self.class_names, iou, strict=True)
            },
            "confusion": self.cm.mat.tolist(),
        }
        if res["miou"] is None:  # null, with the reason, rather than a NaN that strict JSON readers reject
            res["note"] = "no labelled pixel: mIoU is undefined"
        return res
