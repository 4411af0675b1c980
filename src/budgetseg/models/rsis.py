"""RSIS (Salvador et al., "Recurrent Neural Networks for Semantic Instance Segmentation"): a timm encoder and
a stack of ConvLSTMs that emits one instance per time step (mask, class, objectness).

The encoder runs once per image; only the decoder loops over the steps. Losses and post-processing live in
`budgetseg.instance`.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from budgetseg.errors import BudgetsegError
from budgetseg.models.convlstm import ConvLSTMCell
from budgetseg.models.encoders import DEFAULT_ENCODER, create_encoder

STRIDES = (32, 16, 8, 4)  # decoder scales, coarse to fine: one skip conv and one ConvLSTM each


class RSIS(nn.Module):
    """Images (B, 3, H, W), H and W multiples of 32 -> per step t < T:

    masks   (B, T, H, W) mask logits at input resolution,
    classes (B, T, C)    class logits over all C = num_classes classes, background (0) included so that a
                         logit's index is its class id; training never targets class 0 (only steps matched
                         to an object get a class loss), and post-processing takes the argmax over 1..C-1,
    stop    (B, T)       objectness logits: sigmoid = probability that step t still holds an object;
                         inference stops at the first step where it falls below 0.5.

    num_classes: C, background included. encoder: a timm name ("tf_efficientnet_lite0", or the paper's
    "resnet101"); its stride 4, 8, 16 and 32 features feed the decoder. hidden: ConvLSTM channels at strides
    32, 16, 8, 4. steps: default number of steps T. class_inputs: W-RSIS hook; step t also gets the one-hot of
    `classes[:, t]` (0 = background, i.e. "no more objects") broadcast over every decoder scale.
    canvas: step t also sees the pixelwise max of the mask probabilities of steps < t (detached), so it knows
    what is already taken; coords: and two channels of x, y in [-1, 1], which lets the decoder learn a spatial
    order in which to take objects. Both are additions to RSIS: without them, a few hundred iterations end in
    the symmetric minimum where every step predicts the union of all objects (measured on fashion-scenes).
    """

    def __init__(
        self,
        num_classes: int,
        encoder: str = DEFAULT_ENCODER,
        encoder_weights: str | Path | None = "imagenet",
        hidden: tuple[int, ...] = (64, 64, 32, 32),
        steps: int = 10,
        class_inputs: bool = False,
        canvas: bool = True,
        coords: bool = True,
    ):
        super().__init__()
        if len(hidden) != len(STRIDES):
            raise BudgetsegError(f"RSIS needs {len(STRIDES)} hidden sizes (strides {STRIDES}), got {hidden}")
        self.num_classes, self.steps, self.class_inputs = num_classes, steps, class_inputs
        self.canvas, self.coords = canvas, coords
        self.encoder, self.weights_log = create_encoder(encoder, encoder_weights, out_indices=(1, 2, 3, 4))
        reductions = self.encoder.feature_info.reduction()
        if list(reductions) != sorted(STRIDES):
            raise BudgetsegError(f"encoder {encoder!r} gives features at strides {reductions}, RSIS needs 4..32")
        enc_ch = self.encoder.feature_info.channels()[::-1]  # coarse to fine, as the decoder walks
        extra = (num_classes if class_inputs else 0) + (1 if canvas else 0) + (2 if coords else 0)
        # encoder features reach |x| ~ 60: project and normalise them before they enter the LSTM gates
        self.skips = nn.ModuleList(
            nn.Sequential(nn.Conv2d(e, h, 3, padding=1, bias=False), nn.GroupNorm(8, h), nn.ReLU(inplace=True))
            for e, h in zip(enc_ch, hidden, strict=True)
        )
        self.cells = nn.ModuleList(
            ConvLSTMCell((hidden[i - 1] if i else 0) + h + extra, h) for i, h in enumerate(hidden)
        )
        self.mask_head = nn.Conv2d(hidden[-1], 1, 1)
        # class and objectness read the LSTM states (global max pool) and the stride-16 features under the
        # step's own mask: pooled over the whole image, a step's state mixes every object in it
        self.class_head = nn.Linear(sum(hidden) + hidden[1], num_classes)
        self.stop_head = nn.Linear(sum(hidden) + hidden[1], 1)

    def adapt_state(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """W-RSIS weights for this plain RSIS: each gate convolution drops the input channels that read the class
        one-hot (they follow the state from below and the skip features), so the LSTMs keep what W-RSIS learned
        instead of starting afresh. Other state dicts pass through."""
        if self.class_inputs:
            return state
        state, k = dict(state), self.num_classes
        for i, cell in enumerate(self.cells):
            key, want = f"cells.{i}.gates.weight", cell.gates.weight.shape
            w = state.get(key)
            if w is None or w.shape[1] != want[1] + k or w.shape[0] != want[0]:
                continue
            one_hot = self.class_channels(i)
            state[key] = torch.cat([w[:, : one_hot.start], w[:, one_hot.stop :]], dim=1)
        return state

    def class_channels(self, i: int) -> slice:
        """Where cell i's input holds the class one-hot (W-RSIS): after the state from below and the skip features,
        as forward() stacks them."""
        start = (self.skips[i - 1][0].out_channels if i else 0) + self.skips[i][0].out_channels
        return slice(start, start + self.num_classes)

    def forward(self, x: Tensor, steps: int | None = None, classes: Tensor | None = None) -> dict[str, Tensor]:
        """x (B, 3, H, W); steps: T (default self.steps); classes: long (B, T) class ids, only with
        class_inputs (then T = classes.shape[1]). Returns dict(masks, classes, stop) as in the class doc."""
        b, _, h, w = x.shape
        if h % 32 or w % 32:
            raise BudgetsegError(f"RSIS input sides must be multiples of 32 pixels, got {h}x{w}; pad the images")
        if self.class_inputs != (classes is not None):
            raise ValueError("pass `classes` (B, T) exactly when the model was built with class_inputs=True")
        if classes is not None:
            if steps is not None and steps != classes.shape[1]:
                raise ValueError(f"steps={steps} but classes has {classes.shape[1]} steps")
            steps = classes.shape[1]
        steps = self.steps if steps is None else steps
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")

        skips = [conv(f) for conv, f in zip(self.skips, self.encoder(x)[::-1], strict=True)]
        grids = [_coords(s) for s in skips] if self.coords else None
        taken = x.new_zeros(b, 1, *skips[-1].shape[-2:])  # canvas at stride 4: max mask probability so far
        states: list[tuple[Tensor, Tensor] | None] = [None] * len(self.cells)
        masks, cls, stop = [], [], []
        for t in range(steps):
            onehot = F.one_hot(classes[:, t], self.num_classes).to(x.dtype) if classes is not None else None
            below = None
            for i, (cell, skip) in enumerate(zip(self.cells, skips, strict=True)):
                hw = skip.shape[-2:]
                parts = [skip]
                if below is not None:
                    parts.insert(0, F.interpolate(below, size=hw, mode="bilinear", align_corners=False))
                if onehot is not None:
                    parts.append(onehot[:, :, None, None].expand(-1, -1, *hw))
                if self.canvas:
                    parts.append(taken if taken.shape[-2:] == hw else F.adaptive_max_pool2d(taken, hw))
                if grids is not None:
                    parts.append(grids[i])
                states[i] = cell(torch.cat(parts, dim=1), states[i])
                below = states[i][0]
            logits = self.mask_head(below)
            weights = F.adaptive_avg_pool2d(torch.sigmoid(logits.detach()), skips[1].shape[-2:])  # (B, 1, h, w)
            under = (skips[1] * weights).sum((2, 3)) / weights.sum((2, 3)).clamp(min=1e-3)  # (B, hidden[1])
            pooled = torch.cat([s[0].amax(dim=(2, 3)) for s in states] + [under], dim=1)
            if self.canvas:
                taken = torch.maximum(taken, torch.sigmoid(logits.detach()))
            masks.append(logits)
            cls.append(self.class_head(pooled))
            stop.append(self.stop_head(pooled)[:, 0])
        # upsample all steps at once: (B * T, 1, H / 4, W / 4) -> (B, T, H, W)
        m = F.interpolate(torch.stack(masks, 1).flatten(0, 1), size=(h, w), mode="bilinear", align_corners=False)
        return {"masks": m.reshape(b, steps, h, w), "classes": torch.stack(cls, 1), "stop": torch.stack(stop, 1)}


def _coords(f: Tensor) -> Tensor:
    """(B, 2, H, W) x and y coordinates in [-1, 1] for a feature map f (B, C, H, W)."""
    b, _, h, w = f.shape
    ys = torch.linspace(-1.0, 1.0, h, dtype=f.dtype, device=f.device)
    xs = torch.linspace(-1.0, 1.0, w, dtype=f.dtype, device=f.device)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), 0)  # (2, H, W): x, y
    return grid[None].expand(b, -1, -1, -1)


def build_rsis(
    num_classes: int,
    encoder: str = DEFAULT_ENCODER,
    encoder_weights: str | Path | None = "imagenet",
    steps: int = 10,
    hidden: tuple[int, ...] = (64, 64, 32, 32),
    class_inputs: bool = False,
) -> tuple[RSIS, str]:
    """RSIS and a one-line description of its encoder weights for the run log (see RSIS for the arguments)."""
    model = RSIS(num_classes, encoder, encoder_weights, hidden=hidden, steps=steps, class_inputs=class_inputs)
    return model, model.weights_log
