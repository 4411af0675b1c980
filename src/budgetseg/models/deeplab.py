"""DeepLabv3+ (segmentation-models-pytorch) on a timm encoder chosen by name, weights loaded offline."""

from __future__ import annotations

from pathlib import Path

import segmentation_models_pytorch as smp
from torch import nn

from budgetseg.models.encoders import DEFAULT_ENCODER, check_encoder_name, load_encoder_weights


def build_deeplab(
    num_classes: int,
    encoder: str = DEFAULT_ENCODER,
    encoder_weights: str | Path | None = "imagenet",
    output_stride: int = 16,
) -> tuple[nn.Module, str]:
    """DeepLabv3+ mapping images (B, 3, H, W) to logits (B, num_classes, H, W).

    H and W must be multiples of `output_stride` (8 or 16); smp raises otherwise, so pad inputs.
    encoder: a timm model name (default EfficientNet-Lite0; the paper's "xception65" for GPU users).
    encoder_weights: "imagenet" (offline shipped weights), a state dict path, or None / "none".
    Returns the model and a one-line description of the encoder weights for the run log.
    """
    check_encoder_name(encoder)
    # smp must never download: weights come from load_encoder_weights into its timm features model
    model = smp.DeepLabV3Plus(
        encoder_name="tu-" + encoder,
        encoder_weights=None,
        classes=num_classes,
        encoder_output_stride=output_stride,
    )
    return model, load_encoder_weights(model.encoder.model, encoder_weights)
