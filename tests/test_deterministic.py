"""Deterministic training: the flags enable_determinism sets, no op in our models that PyTorch's deterministic
mode refuses on CUDA, and (on a GPU) two trainings with the same seed give the same weights bit for bit."""

from __future__ import annotations

import os

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from budgetseg.engine.device import enable_determinism
from budgetseg.models.deeplab import build_deeplab
from budgetseg.models.rsis import build_rsis

C = 4
# aten ops that torch.use_deterministic_algorithms(True) refuses on CUDA (its docs, torch 2.14)
REFUSED = (
    "upsample_linear1d_backward",
    "upsample_bilinear2d_backward",
    "upsample_bicubic2d_backward",
    "upsample_trilinear3d_backward",
    "_upsample_bilinear2d_aa_backward",
    "adaptive_avg_pool2d_backward",
    "adaptive_avg_pool3d_backward",
    "adaptive_max_pool2d_backward",
    "avg_pool3d_backward",
    "fractional_max_pool2d_backward",
    "max_unpool2d",
)


class OpNames(TorchDispatchMode):
    """Records the names of the aten ops that run while it is active (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


@pytest.fixture
def deterministic_mode():
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(False)


@pytest.mark.parametrize("name", ["deeplab", "rsis"])
def test_no_op_that_deterministic_mode_refuses_on_a_gpu(name, deterministic_mode):
    """On a non-CPU device (meta: shapes only) torch takes the paths it takes on CUDA; none may be refused."""
    torch.manual_seed(0)
    model = build_deeplab(C, encoder_weights=None)[0] if name == "deeplab" else build_rsis(C, encoder_weights=None)[0]
    model = model.to("meta").train()
    with OpNames() as ops:
        out = model(torch.randn(2, 3, 64, 64, device="meta"))
        outs = [out] if isinstance(out, torch.Tensor) else list(out.values())
        sum(o.float().mean() for o in outs).backward()
    assert "convolution_backward" in ops.names  # the recorder saw the backward pass
    assert not {n.lstrip("_") for n in ops.names} & {n.lstrip("_") for n in REFUSED}


def test_enable_determinism_sets_flags_and_keeps_a_users_workspace(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    try:
        enable_determinism(torch.device("cpu"))
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ  # only CUDA reads it
        enable_determinism(torch.device("cuda"))  # sets variables only: works without a GPU
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
        enable_determinism(torch.device("cuda"))
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


def _train_cuda(name: str) -> dict[str, torch.Tensor]:
    """Weights after 3 SGD steps on CUDA as engine.train.train runs them (channels-last, bf16 autocast), from seed 0."""
    from budgetseg.instance.task import InstanceTask
    from budgetseg.semantic.task import SemanticTask

    torch.manual_seed(0)
    if name == "deeplab":
        model, side, task = build_deeplab(C, encoder_weights=None)[0], 128, SemanticTask(["c"] * C)
        target = torch.randint(0, C, (2, side, side))
    else:
        model, side, task = build_rsis(C, encoder_weights=None, steps=3)[0], 64, InstanceTask(["c"] * C, steps=3)
        target = torch.zeros(2, side, side, 2, dtype=torch.long)
        target[:, 8:30, 10:40] = torch.tensor([1, 1])
        target[1, 36:60, 20:50] = torch.tensor([2, 2])
    model = model.cuda().to(memory_format=torch.channels_last).train()
    x = torch.randn(2, 3, side, side).cuda().contiguous(memory_format=torch.channels_last)
    target, weight = target.cuda(), torch.ones(2, device="cuda")
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for _ in range(3):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = task.loss(task.forward(model, x, target), target, weight)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", ["deeplab", "rsis"])
def test_cuda_training_is_reproducible(name):
    """Bit-identical weights from two runs (a refused op would raise here). enable_determinism must come before
    the process's first CUDA matmul: run this file alone for a faithful check."""
    enable_determinism(torch.device("cuda"))
    try:
        first, second = _train_cuda(name), _train_cuda(name)
    finally:
        torch.use_deterministic_algorithms(False)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
