"""Networks: DeepLabv3+ and the timm encoders (offline weights) that later models reuse."""

from budgetseg.models.deeplab import build_deeplab
from budgetseg.models.encoders import (
    DEFAULT_ENCODER,
    create_encoder,
    lite0_state_dict,
    load_encoder_weights,
    shipped_state_dict,
)

__all__ = [
    "DEFAULT_ENCODER",
    "build_deeplab",
    "create_encoder",
    "load_encoder_weights",
    "lite0_state_dict",
    "shipped_state_dict",
]
