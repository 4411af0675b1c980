"""Evaluators with one interface (reset / process / evaluate -> {"metric": value}), so one loop serves all."""

from __future__ import annotations

import numpy as np
import torch


def reduce_device() -> torch.device:
    """Where the default process group reduces tensors: NCCL takes CUDA tensors only (on this rank's GPU, which
    engine.init_distributed selects), gloo CPU ones."""
    if "nccl" in str(torch.distributed.get_backend()):
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class ConfusionMatrix:
    """Accumulates a (C, C) confusion matrix (rows: ground truth, columns: prediction) with bincount."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.mat = torch.zeros((num_classes, num_classes), dtype=torch.int64)

    def update(self, target: torch.Tensor, pred: torch.Tensor) -> None:
        """target, pred: integer tensors of one shape; target pixels outside [0, C) (e.g. 255) are skipped."""
        n = self.num_classes
        target, pred = target.flatten().long(), pred.flatten().long()
        keep = (target >= 0) & (target < n)
        idx = n * target[keep] + pred[keep]
        self.mat += torch.bincount(idx, minlength=n * n).reshape(n, n).cpu()

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


class SemanticEvaluator:
    """mIoU (mean over classes present in ground truth or prediction), per-class IoU and pixel accuracy."""

    def __init__(self, class_names: list[str]):
        self.class_names = class_names
        self.reset()

    def reset(self) -> None:
        self.cm = ConfusionMatrix(len(self.class_names))

    def process(self, target: torch.Tensor | np.ndarray, pred: torch.Tensor | np.ndarray) -> None:
        """target: (H, W) or (B, H, W) labels with 255 = ignore; pred: same shape, class ids."""
        self.cm.update(torch.as_tensor(np.array(target)), torch.as_tensor(np.array(pred)))

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
        }
        if res["miou"] is None:  # null, with the reason, rather than a NaN that strict JSON readers reject
            res["note"] = "no labelled pixel: mIoU is undefined"
        return res
