"""Encoders with offline weights, and DeepLabv3+ shapes / gradients. No model hub is touched."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # a hub request would fail loudly instead of hanging

import pytest
import skimage.data
import timm
import torch
from PIL import Image
from timm.data import create_transform, resolve_data_config

from budgetseg.errors import BudgetsegError
from budgetseg.models import build_deeplab, create_encoder, lite0_state_dict, load_encoder_weights

CAT_CLASSES = [281, 282, 283, 284, 285]  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = [504, 967, 968]  # coffee mug, espresso, cup


@pytest.fixture(scope="module")
def lite0_sd():
    return lite0_state_dict()


def _probabilities(model: torch.nn.Module, image) -> torch.Tensor:
    """ImageNet class probabilities (1000,) of an (H, W, 3) uint8 photo, preprocessed per timm's config."""
    transform = create_transform(**resolve_data_config({}, model=model))  # 224 px, bicubic, mean/std 0.5
    x = transform(Image.fromarray(image))[None]
    with torch.no_grad():
        return model.eval()(x).softmax(-1)[0]


def test_lite0_mapping_classifies_real_photos(lite0_sd):
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    model.load_state_dict(lite0_sd)  # strict: all 296 tensors, classifier included
    cat = _probabilities(model, skimage.data.chelsea())
    coffee = _probabilities(model, skimage.data.coffee())
    assert set(cat.topk(5).indices.tolist()) & set(CAT_CLASSES)
    assert set(coffee.topk(5).indices.tolist()) & set(COFFEE_CLASSES)
    # confident, so a mapping that is slightly off (e.g. shuffled BN statistics) fails here
    assert cat[CAT_CLASSES].sum() > 0.5
    assert coffee[COFFEE_CLASSES].sum() > 0.5

    # negative controls: a random model, and the shipped tensors with BN variances swapped between
    # same-shape layers (a plausible order mix-up), are both far from passing
    torch.manual_seed(0)
    random_model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    assert _probabilities(random_model, skimage.data.chelsea())[CAT_CLASSES].sum() < 0.1
    swapped = dict(lite0_sd)
    for key in [k for k in lite0_sd if k.endswith("bn1.running_var")]:
        other = key.replace("bn1", "bn2")
        if other in lite0_sd and lite0_sd[other].shape == lite0_sd[key].shape:
            swapped[key], swapped[other] = lite0_sd[other], lite0_sd[key]
    model.load_state_dict(swapped)
    assert _probabilities(model, skimage.data.chelsea())[CAT_CLASSES].sum() < 0.1


def test_lite0_state_dict_matches_timm_keys(lite0_sd):
    reference = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    assert list(lite0_sd) == list(reference)
    assert all(lite0_sd[k].shape == v.shape for k, v in reference.items())


@pytest.mark.parametrize("weights", ["imagenet", None])
def test_deeplab_shapes_and_backward(weights):
    torch.manual_seed(0)
    model, log = build_deeplab(num_classes=5, encoder="tf_efficientnet_lite0", encoder_weights=weights)
    assert ("random initialisation" in log) == (weights is None)
    out = model.train()(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 5, 64, 64)
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_deeplab_128_channels_last():
    model, _ = build_deeplab(num_classes=3, encoder_weights=None)
    model = model.eval().to(memory_format=torch.channels_last)
    x = torch.randn(1, 3, 128, 128).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert model(x).shape == (1, 3, 128, 128)


def test_imagenet_weights_land_in_smp_encoder(lite0_sd):
    model, log = build_deeplab(num_classes=3)
    encoder = model.encoder.model.state_dict()
    assert "288 tensors" in log
    assert len(encoder) == 288  # 296 minus conv_head, bn2 (5) and classifier (2)
    assert all(torch.equal(v, lite0_sd[k]) for k, v in encoder.items())


def test_no_offline_weights_for_other_encoders():
    with pytest.raises(BudgetsegError, match="no offline ImageNet weights.*xception65"):
        build_deeplab(num_classes=3, encoder="xception65", encoder_weights="imagenet")


def test_unknown_encoder_name():
    with pytest.raises(BudgetsegError, match="unknown encoder"):
        build_deeplab(num_classes=3, encoder="no_such_net", encoder_weights=None)


def test_load_encoder_weights_from_path(tmp_path):
    source = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    path = tmp_path / "full.pth"
    torch.save({"state_dict": source.state_dict()}, path)  # full model, wrapped, classifier included
    encoder, log = create_encoder(weights=path)
    assert str(path) in log and "288 tensors" in log
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in encoder.state_dict().items())


def test_load_encoder_weights_from_deeplab_checkpoint(tmp_path):
    model, _ = build_deeplab(num_classes=3, encoder_weights=None)
    path = tmp_path / "deeplab.pth"
    torch.save({"model": model.state_dict()}, path)  # keys "encoder.model.*" plus decoder keys
    encoder, _ = create_encoder(weights=path, output_stride=16)
    assert all(torch.equal(v, model.encoder.model.state_dict()[k]) for k, v in encoder.state_dict().items())


def test_load_encoder_weights_errors_name_the_file(tmp_path):
    encoder = timm.create_model("tf_efficientnet_lite0", pretrained=False, features_only=True)
    missing = tmp_path / "missing.pth"
    with pytest.raises(BudgetsegError, match="missing.pth: .*not found"):
        load_encoder_weights(encoder, missing)

    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"this is not a checkpoint")
    with pytest.raises(BudgetsegError, match="corrupt.pth: cannot read"):
        load_encoder_weights(encoder, corrupt)

    not_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], not_dict)
    with pytest.raises(BudgetsegError, match="list.pth: not a state dict"):
        load_encoder_weights(encoder, not_dict)

    wrong_shape = tmp_path / "shape.pth"
    state = dict(encoder.state_dict(), **{"conv_stem.weight": torch.zeros(8, 3, 3, 3)})
    torch.save(state, wrong_shape)
    with pytest.raises(BudgetsegError, match="shape.pth: shape mismatch for conv_stem.weight"):
        load_encoder_weights(encoder, wrong_shape)

    other_net = tmp_path / "resnet.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), other_net)
    with pytest.raises(BudgetsegError, match="resnet.pth: .*encoder tensors missing"):
        load_encoder_weights(encoder, other_net)


def test_no_weights_says_so():
    encoder = timm.create_model("tf_efficientnet_lite0", pretrained=False, features_only=True)
    assert "no pretrained weights" in load_encoder_weights(encoder, "none")
    assert "no pretrained weights" in load_encoder_weights(encoder, None)


@pytest.mark.parametrize("encoder", ["xception65", "resnet101"])
def test_other_encoders_by_name(encoder):
    model, log = build_deeplab(num_classes=4, encoder=encoder, encoder_weights=None)
    assert "no pretrained weights" in log
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 4, 64, 64)
