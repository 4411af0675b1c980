"""Semantic segmentation (DeepLabv3+): one class per pixel. SemanticTask implements budgetseg.task.Task."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, NamedTuple

import numpy as np
import torch
from torch import nn

from budgetseg.config import ModelConfig
from budgetseg.data.sample import IGNORE, Sample
from budgetseg.engine.resize import batch_rows, resized_tiles, unresized
from budgetseg.semantic.metrics import SemanticEvaluator
from budgetseg.semantic.outputs import SemanticItem, SemanticPredictionFiles
from budgetseg.semantic.pseudo import SemanticPseudoLabels
from budgetseg.task import PLAIN, InferOptions


class SemanticPrediction(NamedTuple):
    """One image's semantic prediction at its own size."""

    label: np.ndarray  # uint8 (H, W): the most probable class
    confidence: np.ndarray  # uint8 (H, W): round(255 * its probability)
    second: np.ndarray | None = None  # uint8 (H, W), with pair_margin: the runner-up class where close, else 255


def pair_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-pixel loss (B, H, W) against target long (B, H, W, 2): -log(p_a + p_b) where the pixel has a pair
    (a, b) = target[..., 0], target[..., 1] (a partial label: either class is right), -log p_a where b is 255,
    0 where a is 255 (ignored)."""
    first, second = target[..., 0], target[..., 1]
    a = first.masked_fill(first == IGNORE, 0)
    b = torch.where(second == IGNORE, a, second)
    la, lb = logits.gather(1, a[:, None])[:, 0], logits.gather(1, b[:, None])[:, 0]
    picked = torch.where(second == IGNORE, la, torch.logaddexp(la, lb))
    return (logits.logsumexp(1) - picked).masked_fill(first == IGNORE, 0.0)


def restrict_to_image_labels(
    probs: torch.Tensor, labels: list[dict[int, int] | None], background: bool = True
) -> torch.Tensor:
    """Probabilities (B, C, H, W) with each image's classes limited to the background (where the label set has one)
    and those its image-level labels name, renormalised: p(c | x, c among the image's classes). A confusion with a
    class the image does not hold becomes the likeliest class it does hold. An image whose labels are None (not
    tagged) keeps every class."""
    keep = torch.zeros(probs.shape[:2], dtype=probs.dtype)  # made on the CPU: indexing a GPU tensor syncs
    keep[:, 0] = float(background)
    for b, classes in enumerate(labels):
        keep[b, list(classes) if classes is not None else slice(None)] = 1.0
    restricted = probs * keep.to(probs.device, non_blocking=True)[:, :, None, None]
    return restricted / restricted.sum(1, keepdim=True).clamp_min(1e-12)


def aligned(probs: torch.Tensor, factors: tuple[float, ...]) -> torch.Tensor:
    """Probabilities (B, C, H, W) times per-class factors (C,), renormalised over C (pseudo.align: the factors are
    fitted in semantic/align.py)."""
    w = torch.tensor(factors, dtype=probs.dtype, device=probs.device).view(1, -1, 1, 1)
    p = probs * w
    return p / p.sum(1, keepdim=True).clamp_min(1e-12)


@dataclass(frozen=True)
class SemanticTask:
    """DeepLabv3+ over `class_names`; background: whether class 0 is a background (no object) rather than a class
    of its own (the overlays and the image-level restriction leave it out then); category_ids: task.Task's."""

    class_names: list[str]
    background: bool = True
    category_ids: list[int] | None = None
    name: ClassVar[str] = "semantic"
    metric: ClassVar[str] = "miou"
    metric_label: ClassVar[str] = "mIoU"
    extra_metrics: ClassVar[tuple] = ()
    tiles: ClassVar[bool] = True  # images beyond data.window are predicted in sliding windows (engine.infer)
    supports_tta: ClassVar[bool] = True
    trains_on_objects: ClassVar[bool] = False  # a class's pixels, whatever the objects
    max_objects: ClassVar[int | None] = None  # a class map holds any number of objects
    preview_classes: ClassVar[bool] = True
    stop_test: ClassVar[bool] = False  # every pixel gets a class: no sequence to stop
    class_inputs: ClassVar[bool] = False  # no weak-label-conditioned variant (W-RSIS is instance-only)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def build_model(self, m: ModelConfig) -> tuple[nn.Module, str]:
        from budgetseg.models.deeplab import build_deeplab

        return build_deeplab(self.num_classes, encoder=m.encoder, encoder_weights=m.encoder_weights)

    def adapt_state(self, model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """f_theta's weights fit g_phi's DeepLab as they are."""
        return state

    def target(self, sample: Sample) -> np.ndarray:
        """Dense training target: uint8 (H, W), 255 = ignore."""
        return sample.semantic

    def forward(self, model: nn.Module, x: torch.Tensor, targets: torch.Tensor, progress: float = 1.0) -> torch.Tensor:
        """Training forward pass: logits (B, C, H, W)."""
        return model(x)

    def loss(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """(cross-entropy over non-ignored pixels, no terms beside it); each image's pixels weighted by weight (B,).
        target long (B, H, W), or (B, H, W, 2) with pseudo-label pairs (pair_cross_entropy)."""
        if target.ndim == 4:
            per_px, target = pair_cross_entropy(logits, target), target[..., 0]
        else:
            per_px = nn.functional.cross_entropy(logits, target, ignore_index=IGNORE, reduction="none")
        valid = (target != IGNORE).float()
        w = weight.view(-1, 1, 1) * valid
        return (per_px * w).sum() / valid.sum().clamp(min=1.0), {}

    def consistency_loss(self, logits: torch.Tensor, teacher: torch.Tensor, threshold: float) -> torch.Tensor:
        """Cross-entropy of logits (B, C, H, W) against the argmax of teacher logits (B, C, H, W) where the teacher's
        softmax is >= threshold, averaged over all pixels (FixMatch: the confident share sets the strength)."""
        conf, label = teacher.float().softmax(1).max(1)
        per_px = nn.functional.cross_entropy(logits.float(), label, reduction="none")
        return (per_px * (conf >= threshold)).mean()

    def infer(
        self, model: nn.Module, x: torch.Tensor, ids: Sequence[str] = (), options: InferOptions = PLAIN
    ) -> torch.Tensor:
        """Softmax probabilities (B, C, H, W), averaged over the input options.scales (sides rounded to multiples of
        16) and, with options.tta, over the mirrored batch too; with options.weak, restricted to the classes of the
        images `ids` (restrict_to_image_labels); with options.class_weights, aligned to them (aligned)."""
        h, w = x.shape[-2:]
        total = 0.0
        for s in options.scales:
            xs = x
            if s != 1.0:
                size = (max(16, round(h * s / 16) * 16), max(16, round(w * s / 16) * 16))
                xs = nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
            for flip in (False, True) if options.tta else (False,):
                xi = xs.flip(-1) if flip else xs
                p = model(xi).float().softmax(1)
                p = p.flip(-1) if flip else p
                if p.shape[-2:] != (h, w):
                    p = nn.functional.interpolate(p, size=(h, w), mode="bilinear", align_corners=False)
                total = total + p
        probs = total / (len(options.scales) * (2 if options.tta else 1))
        if options.weak is not None:
            probs = restrict_to_image_labels(probs, [options.weak.get(i) for i in ids], self.background)
        return probs if options.class_weights is None else aligned(probs, options.class_weights)

    def _maps(self, p: torch.Tensor, pair_margin: float | None) -> torch.Tensor:
        """uint8 (..., K, H, W) of probabilities (..., C, H, W): label, round(255 * confidence) and, with
        pair_margin, the runner-up where within the margin (else 255)."""
        if pair_margin is not None:
            values, index = p.topk(2, dim=-3)
            (conf, conf2), (label, second) = values.unbind(-3), index.unbind(-3)
            second = torch.where(conf - conf2 < pair_margin, second, IGNORE)
            maps = [label, conf.mul(255).round_(), second]
        else:  # max, not argmax: the same first-maximum index, many times faster on CPU
            conf, label = p.max(-3)
            maps = [label, conf.mul(255).round_()]
        return torch.stack([m.to(torch.uint8) for m in maps], -3)

    def decode(
        self, probs: torch.Tensor, j: int, hw: tuple[int, int], size: tuple[int, int], pair_margin: float | None = None
    ) -> torch.Tensor:
        """Image j's maps (_maps: K, H, W) at its own `size`, from the letterboxed (h, w) = hw region of the
        probabilities (B, C, h', w'), resized tile by tile (resized_tiles: memory bounded whatever the size). They
        are taken where `probs` lie: only uint8 maps, in one copy, reach the CPU, not C float maps. On CUDA the copy
        is asynchronous: read it (finish) only once the device has reached this point (engine.infer.predict waits)."""
        p = probs[j, :, : hw[0], : hw[1]]
        if tuple(hw) == tuple(size):
            return self._maps(p, pair_margin).to("cpu", non_blocking=True)
        maps = None
        for rows, cols, tile in resized_tiles(p, size):
            m = self._maps(tile, pair_margin)
            maps = m.new_empty((m.shape[0], *size)) if maps is None else maps
            maps[:, rows, cols] = m
        return maps.to("cpu", non_blocking=True)

    def decode_batch(self, probs: torch.Tensor, hws: list, sizes: list, options: InferOptions) -> list[torch.Tensor]:
        """decode of every image of the batch; those that need no resizing reduced and copied together (one copy,
        a few kernels per batch instead of per image: at 128 px a GPU's launches, not its arithmetic, set the
        pace). The same values as image by image."""
        same = unresized(hws, sizes)
        margin = options.pair_margin
        out = [None if j in same else self.decode(probs, j, hws[j], sizes[j], margin) for j in range(len(hws))]
        if same:
            maps = self._maps(batch_rows(probs, same), margin).to("cpu", non_blocking=True)
            for k, j in enumerate(same):
                out[j] = maps[k, :, : hws[j][0], : hws[j][1]]
        return out

    def finish(self, maps: torch.Tensor) -> SemanticPrediction:
        """The prediction of a decoded image once its copy has landed."""
        return SemanticPrediction(*np.ascontiguousarray(maps.numpy()))

    def result(self, prediction: SemanticPrediction) -> np.ndarray:
        """The label map uint8 (H, W)."""
        return prediction.label

    def evaluator(self) -> SemanticEvaluator:
        return SemanticEvaluator(self.class_names)

    def score(self, ev: SemanticEvaluator, sample: Sample, pred: SemanticPrediction) -> np.ndarray:
        """Add one prediction to the evaluator; returns the label map uint8 (H, W) for previews."""
        ev.process(sample.semantic, pred.label)
        return pred.label

    @staticmethod
    def preview_truth(sample: Sample) -> np.ndarray:
        """The class map."""
        return sample.semantic

    def overlay_index(self, prediction: SemanticPrediction, size: tuple[int, int]) -> tuple[np.ndarray, int]:
        """The label map; every class but the background is coloured."""
        return prediction.label, 1 if self.background else 0

    def pseudo_labels(self, folder: Path) -> SemanticPseudoLabels:
        return SemanticPseudoLabels(Path(folder), list(self.class_names), self.background)

    def prediction_files(self, out: Path) -> SemanticPredictionFiles:
        return SemanticPredictionFiles(Path(out))

    def export_item(self, sample: Sample, image: Path, source: str = "strong") -> SemanticItem:
        return SemanticItem(sample.id, source, image, sample.semantic, first=1 if self.background else 0)
