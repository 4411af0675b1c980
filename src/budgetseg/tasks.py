"""The one seam between semantic and instance segmentation: what the model is, its loss, how raw outputs
become predictions, and which evaluator scores them. The pipeline only talks to a task object."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import timm
import torch
from torch import nn

from budgetseg.config import ModelConfig
from budgetseg.data.sample import IGNORE, Sample
from budgetseg.metrics import SemanticEvaluator


def encoder_mean_std(encoder: str) -> tuple[tuple, tuple]:
    """Input normalisation the encoder was trained with (tf_efficientnet_lite0: 0.5 / 0.5)."""
    cfg = timm.models.get_pretrained_cfg(encoder)
    if cfg is None:
        return (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    return tuple(cfg.mean), tuple(cfg.std)


@dataclass
class SemanticTask:
    class_names: list[str]
    name: str = "semantic"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def build_model(self, m: ModelConfig) -> tuple[nn.Module, str]:
        from budgetseg.models.deeplab import build_deeplab

        return build_deeplab(self.num_classes, encoder=m.encoder, encoder_weights=m.encoder_weights)

    def target(self, sample: Sample) -> np.ndarray:
        """Dense training target: uint8 (H, W), 255 = ignore."""
        return sample.semantic

    def loss(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over non-ignored pixels; each image's pixels weighted by weight (B,)."""
        per_px = nn.functional.cross_entropy(logits, target, ignore_index=IGNORE, reduction="none")
        valid = (target != IGNORE).float()
        w = weight.view(-1, 1, 1) * valid
        return (per_px * w).sum() / valid.sum().clamp(min=1.0)

    def evaluator(self) -> SemanticEvaluator:
        return SemanticEvaluator(self.class_names)


def make_task(name: str, class_names: list[str]):
    if name == "semantic":
        return SemanticTask(class_names)
    from budgetseg.errors import BudgetsegError

    raise BudgetsegError(f"task {name!r} is not available yet (semantic is)")
