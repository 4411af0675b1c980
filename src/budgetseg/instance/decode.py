"""RSIS outputs to instances: each step's objectness, class probabilities and mask bits, reduced on the device,
then the instances of an image (a stop test, or W-RSIS's given classes)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


@torch.no_grad()
def step_outputs(
    out: dict[str, Tensor], image_index: int, mask_threshold: float = 0.5, non_blocking: bool = False
) -> dict[str, Tensor]:
    """Image `image_index`'s per-step outputs, reduced where they lie and copied to the CPU: "objectness" (T,),
    "probs" (T, C) class softmax, "masks" bool (T, H, W) (probability above mask_threshold). With
    non_blocking the copies from a GPU are asynchronous: read them only once the device has reached this point
    (engine.infer.predict waits for it)."""
    one = {k: out[k][image_index : image_index + 1] for k in ("stop", "classes", "masks")}
    return {k: v[0] for k, v in batch_step_outputs(one, mask_threshold, non_blocking).items()}


def batch_step_outputs(
    out: dict[str, Tensor], mask_threshold: float = 0.5, non_blocking: bool = False
) -> dict[str, Tensor]:
    """step_outputs of every image of the batch at once: "objectness" (B, T), "probs" (B, T, C), "masks" bool
    (B, T, H, W); one copy each for the whole batch (the same values as image by image)."""

    def host(t: Tensor) -> Tensor:
        return t.to("cpu", non_blocking=non_blocking)

    return {
        "objectness": host(torch.sigmoid(out["stop"].float())),
        "probs": host(out["classes"].float().softmax(-1)),
        "masks": host(mask_bits(out["masks"], mask_threshold)),
    }


def mask_bits(masks: Tensor, threshold: float = 0.5) -> Tensor:
    """bool masks: the mask logits' probability above `threshold`."""
    return torch.sigmoid(masks.float()) > threshold


def select_instances(steps: dict[str, Tensor], stop_threshold: float) -> list[tuple[np.ndarray, int, float]]:
    """[(mask bool (H, W), class id, score)] from step_outputs: steps are emitted until the objectness first falls
    below stop_threshold (model.stop_threshold, in (0, 1)), so a lower one keeps the same instances and maybe more;
    the class is the most probable of 1..C-1 (softmax over all C); score = that class probability x objectness.
    Steps with empty masks are dropped."""
    probs, masks = steps["probs"], steps["masks"].numpy()
    result = []
    for t, obj in enumerate(steps["objectness"].tolist()):
        if obj < stop_threshold:
            break
        c = int(probs[t, 1:].argmax()) + 1
        if masks[t].any():
            result.append((masks[t], c, float(probs[t, c]) * obj))
    return result


def select_given(steps: dict[str, Tensor], given: Tensor) -> list[tuple[np.ndarray, int, float]]:
    """W-RSIS instances from step_outputs of an image that was fed the classes `given` long (T,): one instance per
    step with a class > 0, that class, score = objectness. No stop test: the IL+C counts say how many objects
    there are. Steps with empty masks are dropped."""
    objectness, masks = steps["objectness"].tolist(), steps["masks"].numpy()
    return [(masks[t], int(c), objectness[t]) for t, c in enumerate(given.tolist()) if c > 0 and masks[t].any()]
