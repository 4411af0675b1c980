"""Distribution alignment of semantic pseudo-labels (pseudo.align): per-class factors on f_theta's probabilities,
fitted so that the class shares of their argmax over a sample of the pool match the strong labels' pixel shares.

Why: an argmax is winner-take-all. A teacher trained on a few images gives thin and rare classes (CamVid's pole,
sign, pedestrian, bicyclist) some probability where they are, but seldom the most, so its pseudo-labels hold far
fewer of their pixels than the strong labels do and g_phi learns them erased. Matching the argmax's shares gives
them back (as DARS does with class-wise thresholds). ReMixMatch's alignment of the mean probabilities does not:
on CamVid the teacher's mean probabilities already match the strong labels' shares (docs/results/camvid).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from budgetseg.data.sample import IGNORE, SegDataset
from budgetseg.dist import Dist
from budgetseg.engine.batches import TrainSet
from budgetseg.engine.infer import predict
from budgetseg.pseudo import ImagesOnly
from budgetseg.task import InferOptions

SAMPLE = 64  # pool images the factors are fitted on, spread over it (stages.spread)
MAX_PIXELS = 1 << 16  # per image: probabilities taken on a grid beyond this (shares need no more)
STEPS = 40  # damped fixed-point steps of fit_factors
MAX_STEP = float(np.log(2.0))  # the most a factor changes in the first step (log)


class Probabilities:
    """A semantic task (`task`) whose predictions are its class probabilities, float32 (C, h, w) at the working
    resolution, on a grid of at most MAX_PIXELS."""

    tiles = True  # images beyond data.window in sliding windows, as the semantic task predicts them

    def __init__(self, task):
        self.task = task

    def infer(self, *args, **kw) -> torch.Tensor:
        return self.task.infer(*args, **kw)

    def decode_batch(self, probs: torch.Tensor, hws: list, sizes: list, options: InferOptions) -> list[np.ndarray]:
        out = []
        for j, (h, w) in enumerate(hws):
            step = max(1, math.ceil(math.sqrt(h * w / MAX_PIXELS)))
            out.append(probs[j, :, :h:step, :w:step].float().cpu().numpy())
        return out

    def finish(self, pred: np.ndarray) -> np.ndarray:
        return pred


def class_prior(strong: TrainSet, num_classes: int) -> np.ndarray:
    """(C,) each class's share of the labelled pixels of the strong images as they are trained on (box-mask
    estimates included; 255 and values >= C left out)."""
    counts = np.zeros(num_classes, np.int64)
    for k in range(len(strong)):
        target = np.asarray(strong.get(k)[1])
        target = target[(target != IGNORE) & (target < num_classes)]
        counts += np.bincount(target.ravel().astype(np.int64), minlength=num_classes)
    return counts / max(int(counts.sum()), 1)


def fit_factors(probs: list[np.ndarray], prior: np.ndarray, steps: int = STEPS) -> np.ndarray:
    """(C,) factors w, largest 1, such that the class shares of argmax(w * p) over `probs` (each (C, h, w))
    approach `prior` (C,). A class the prior lacks gets (nearly) 0: f_theta never saw it labelled."""
    log_w, c = np.zeros(len(prior)), len(prior)
    with np.errstate(divide="ignore"):
        log_prior = np.log(prior)
    for k in range(steps):
        w = np.exp(log_w - log_w.max())
        counts = sum(np.bincount((p * w[:, None, None]).argmax(0).ravel(), minlength=c) for p in probs)
        share = np.maximum(counts / counts.sum(), 1e-6)
        # half the log-ratio per step, at most a factor of 2 shrinking by a tenth a step: a class that never wins
        # (share 0) would otherwise jump past every other at once, and pixels whose classes are nearly tied would
        # flip back and forth
        bound = MAX_STEP * 0.9**k
        log_w += np.clip(0.5 * (log_prior - np.log(share)), -bound, bound)
    return np.exp(log_w - log_w.max())


def fit_alignment(
    model: nn.Module,
    task,
    pool: SegDataset,
    ids: list[str],
    prior: np.ndarray,
    options: InferOptions,
    *,
    size,
    mean: tuple,
    std: tuple,
    device: torch.device,
    amp: bool = False,
) -> np.ndarray:
    """(C,) factors (fit_factors) from `model`'s probabilities (with `options`: TTA, scales, weak labels) on the pool
    images `ids`, predicted in this process on `device`."""
    one = Dist(0, 1, device)
    kw = dict(size=size, mean=mean, std=std, options=options, d=one, amp=amp, batch_size=8)
    probs = [p for _, p in predict(model, ImagesOnly(pool), ids, Probabilities(task), **kw)]
    return fit_factors(probs, prior)
