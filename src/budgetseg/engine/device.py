"""What runs on the device: the network's input tensor from uint8 images, its precision, reproducibility."""

from __future__ import annotations

import functools
import os

import torch


def autocast(device: torch.device, amp: bool):
    """bf16 autocast on CUDA when `amp`; a no-op context elsewhere (CPU runs fp32: bf16 is slow on most CPUs)."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and device.type == "cuda")


def enable_determinism(device: torch.device) -> None:
    """Make training on `device` reproducible bit for bit: deterministic algorithms only (an op without one
    raises), deterministic cuDNN convolutions without autotuning; on CUDA a fixed cuBLAS workspace. Global for
    the process. Our models need no layer swaps for it: torch's bilinear resize switches to a decomposition with a
    deterministic backward in this mode, and AdaptiveAvgPool2d(1) runs as a mean (tests/test_deterministic.py)."""
    if device.type == "cuda" and "CUBLAS_WORKSPACE_CONFIG" not in os.environ:
        # cuBLAS reads this when its first handle is made (the process's first CUDA matmul): set it before that.
        # A value the user set is kept; torch raises if it is not a deterministic one.
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


@functools.lru_cache(maxsize=16)
def _mean_std(mean: tuple, std: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # made once per device: torch.tensor(..., device=cuda) copies from pageable memory and waits for the GPU,
    # which each training step and inference batch would otherwise pay (the CPU could not run ahead)
    return torch.tensor(mean, device=device).view(1, 3, 1, 1), torch.tensor(std, device=device).view(1, 3, 1, 1)


def to_input(images: torch.Tensor, mean: tuple, std: tuple, device: torch.device) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> normalised float (B, 3, H, W) in channels_last memory."""
    x = images.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
    m, s = _mean_std(tuple(mean), tuple(std), device)
    return ((x - m) / s).contiguous(memory_format=torch.channels_last)
