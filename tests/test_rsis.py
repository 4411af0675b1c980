"""RSIS: ConvLSTM cell, output shapes, gradients, the class-input hook, input checks and a tiny overfit."""

from __future__ import annotations

import os
from collections import Counter

os.environ["HF_HUB_OFFLINE"] = "1"  # a hub request would fail loudly instead of hanging

import numpy as np
import pytest
import torch

from budgetseg.config import ModelConfig
from budgetseg.data.sample import Sample
from budgetseg.errors import BudgetsegError
from budgetseg.instance.matching import instance_target, rsis_loss, steps_for
from budgetseg.instance.task import InstanceTask
from budgetseg.models.convlstm import ConvLSTMCell
from budgetseg.models.rsis import RSIS, build_rsis
from budgetseg.task import InferOptions

C = 4  # background + 3 classes


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_rsis(C, encoder_weights=None, steps=3)[0]


def test_convlstm_cell_shapes_and_state():
    cell = ConvLSTMCell(5, 7)
    x = torch.randn(2, 5, 8, 8)
    h, c = cell(x)
    assert h.shape == c.shape == (2, 7, 8, 8)
    h2, _ = cell(x, (h, c))
    assert not torch.allclose(h, h2)  # the state is used


def test_shapes_channels_last_and_backward(model):
    x = torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    out = model.train().to(memory_format=torch.channels_last)(x)
    assert out["masks"].shape == (2, 3, 64, 64)
    assert out["classes"].shape == (2, 3, C)
    assert out["stop"].shape == (2, 3)
    assert model(x, steps=2)["stop"].shape == (2, 2)
    sum(v.square().mean() for v in out.values()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.encoder.conv_stem.weight.grad.abs().sum() > 0
    assert model.cells[0].gates.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)


def test_input_side_must_be_multiple_of_32(model):
    with pytest.raises(BudgetsegError, match="multiples of 32"):
        model(torch.randn(1, 3, 64, 48))


def test_class_inputs_condition_the_decoder():
    torch.manual_seed(0)
    model, _ = build_rsis(C, encoder_weights=None, steps=3, class_inputs=True)
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a = model(x, classes=torch.tensor([[1, 2, 0]]))
        b = model(x, classes=torch.tensor([[1, 3, 0]]))
    assert a["masks"].shape == (1, 3, 64, 64)
    assert torch.equal(a["masks"][:, 0], b["masks"][:, 0])  # step 0 has the same inputs
    assert not torch.allclose(a["masks"][:, 1], b["masks"][:, 1])
    assert not torch.allclose(a["stop"][:, 2], b["stop"][:, 2])  # and the change carries on via the state
    with pytest.raises(ValueError, match="class_inputs"):
        model(x)


def test_wrsis_weights_carry_over_to_a_plain_rsis():
    """With the class-input weights zeroed, W-RSIS ignores its classes; the plain RSIS built from its adapted
    state must then compute exactly the same thing (so the right input channels were dropped)."""
    torch.manual_seed(0)
    w = RSIS(C, encoder_weights=None, steps=3, class_inputs=True).eval()
    for i, cell in enumerate(w.cells):
        with torch.no_grad():
            cell.gates.weight[:, w.class_channels(i)] = 0
    plain = RSIS(C, encoder_weights=None, steps=3).eval()
    plain.load_state_dict(plain.adapt_state(w.state_dict()))  # strict: every tensor fits
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = w(x, classes=torch.tensor([[1, 2, 3], [3, 3, 0]])), plain(x)
    for key in ("masks", "classes", "stop"):
        torch.testing.assert_close(a[key], b[key])
    assert plain.adapt_state(plain.state_dict()).keys() == plain.state_dict().keys()


def test_canvas_and_coordinates_change_the_inputs_not_the_shapes():
    x = torch.randn(2, 3, 64, 64)
    for canvas, coords in ((False, False), (True, False), (False, True)):
        torch.manual_seed(0)
        m = RSIS(C, encoder_weights=None, steps=3, canvas=canvas, coords=coords).eval()
        extra = int(canvas) + 2 * int(coords)
        assert m.cells[0].gates.in_channels == 64 + extra + 64  # skip + extras + hidden state
        with torch.no_grad():
            assert m(x)["masks"].shape == (2, 3, 64, 64)


def test_wrsis_task_feeds_target_classes_in_emission_order_and_weak_labels_at_inference():
    torch.manual_seed(0)
    task = InstanceTask(["background", "a", "b", "c"], steps=6, class_inputs=True)
    model, _ = task.build_model(ModelConfig(encoder_weights=None))
    masks = np.zeros((3, 64, 64), bool)
    masks[0, :8, :8] = masks[1, 20:40, 20:40] = masks[2, 50:60, 0:10] = True  # classes 3, 1, 3; areas 64, 400, 100
    one = torch.from_numpy(instance_target(masks, np.array([3, 1, 3]), 64, 64)).long()
    targets = torch.stack([one, torch.zeros_like(one)])
    out = task.forward(model.train(), torch.randn(2, 3, 64, 64), targets)
    assert out["given"].tolist() == [[1, 3, 3, 0], [0, 0, 0, 0]]  # class id, then larger first; 0 = no more
    assert out["masks"].shape == (2, 4, 64, 64)
    weak = InferOptions(weak={"p": {2: 2, 1: 1}, "q": {}})
    with torch.no_grad():
        raw = task.infer(model.eval(), torch.randn(2, 3, 64, 64), ["p", "q"], weak)
    assert raw["given"].tolist() == [[1, 2, 2], [0, 0, 0]]
    preds = task.finish(task.decode(raw, 0, (64, 64), (32, 32)))
    assert len(preds) <= 3 and all(m.shape == (32, 32) for m, _, _ in preds)
    assert not Counter(c for _, c, _ in preds) - Counter([1, 2, 2])  # known classes only (empty masks dropped)
    assert task.finish(task.decode(raw, 1, (64, 64), (64, 64))) == []
    with pytest.raises(BudgetsegError, match="IL\\+C labels"):
        task.infer(model, torch.randn(1, 3, 64, 64), ["p"])


def test_resnet101_by_name():
    model, log = build_rsis(C, encoder="resnet101", encoder_weights=None, steps=2)
    assert "no pretrained weights" in log
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 64, 64))["masks"].shape == (1, 2, 64, 64)


@pytest.mark.slow
def test_overfits_one_image_with_two_squares():
    torch.manual_seed(0)
    masks = np.zeros((2, 64, 64), bool)
    masks[0, 8:28, 8:28] = True
    masks[1, 36:60, 30:54] = True
    image = torch.full((1, 3, 64, 64), -0.5)
    image[0, 0][masks[0]] = 0.8
    image[0, 1][masks[1]] = 0.8
    target = torch.from_numpy(instance_target(masks, np.array([1, 3]), 64, 64)).long()[None]
    steps = steps_for(target, 10)
    assert steps == 3

    model, _ = build_rsis(C, encoder_weights="imagenet", steps=steps)
    model.eval()  # a batch of one: keep the pretrained BN statistics
    encoder = list(model.encoder.parameters())
    decoder = [p for n, p in model.named_parameters() if not n.startswith("encoder.")]
    opt = torch.optim.Adam([{"params": encoder, "lr": 1e-4}, {"params": decoder, "lr": 1e-3}])
    losses = []
    # Both steps first learn the union of the squares; telling the steps apart (through the recurrent
    # state only) takes ~100-180 iterations, hence more than the class and stop terms need.
    for _ in range(240):
        loss = rsis_loss(model(image), target, torch.ones(1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert min(losses[-10:]) < losses[0] / 5

    task = InstanceTask(["background", "a", "b", "c"], steps=2)
    with torch.no_grad():
        found = task.finish(task.decode_batch(model(image), [(64, 64)], [(64, 64)])[0])
    assert len(found) == 2
    for gt, cls in zip(masks, (1, 3), strict=True):
        ious = [(m & gt).sum() / (m | gt).sum() for m, _, _ in found]
        k = int(np.argmax(ious))
        assert ious[k] > 0.5 and found[k][1] == cls


def test_target_paints_largest_first_so_a_small_object_inside_a_large_one_survives():
    small, large = np.zeros((2, 16, 16), bool)
    large[2:14, 2:14] = small[6:9, 6:9] = True
    # Small first: painted in annotation order, the large object would erase it.
    image, semantic = np.zeros((16, 16, 3), np.uint8), np.zeros((16, 16), np.uint8)
    sample = Sample("s", image, semantic, np.stack([small, large]), np.array([2, 1]))
    target = InstanceTask(["background", "a", "b"]).target(sample)
    assert (target[small] == [2, 1]).all()  # class b, instance index 1: still the first mask of the input
    assert (target[large & ~small] == [1, 2]).all() and (target[~large] == 0).all()
    same = instance_target(np.stack([large, large]), np.array([1, 2]), 16, 16)  # a tie: later over earlier
    assert (same[large] == [2, 2]).all()
