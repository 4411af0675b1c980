"""The one seam between semantic and instance segmentation: what the model is, its loss, how raw outputs
become predictions, and which evaluator scores them. The pipeline only talks to a task object."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, NamedTuple

import numpy as np
import timm
import torch
from pycocotools import mask as mask_utils
from torch import nn

from budgetseg.config import ModelConfig, PseudoConfig
from budgetseg.cvppp_metrics import paint
from budgetseg.data.sample import IGNORE, Sample, read_label_png
from budgetseg.dist import SINGLE, Dist
from budgetseg.errors import BudgetsegError
from budgetseg.instance import (
    batch_step_outputs,
    curriculum_steps,
    instance_target,
    instances_from_target,
    mask_bits,
    rsis_loss,
    select_given,
    select_instances,
    step_outputs,
    steps_for,
)
from budgetseg.instance_metrics import InstanceEvaluator
from budgetseg.metrics import SemanticEvaluator
from budgetseg.pseudo_instances import finalize_instances, load_pseudo_labels, paint_order, write_instances
from budgetseg.pseudolabel import finalize, write_semantic
from budgetseg.weak import class_sequence


def encoder_mean_std(encoder: str) -> tuple[tuple, tuple]:
    """Input normalisation the encoder was trained with (tf_efficientnet_lite0: 0.5 / 0.5)."""
    cfg = timm.models.get_pretrained_cfg(encoder)
    if cfg is None:
        return (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    return tuple(cfg.mean), tuple(cfg.std)


class SemanticPrediction(NamedTuple):
    """One image's semantic prediction at its own size."""

    label: np.ndarray  # uint8 (H, W): the most probable class
    confidence: np.ndarray  # uint8 (H, W): round(255 * its probability)
    second: np.ndarray | None = None  # uint8 (H, W), with pair_margin: the runner-up class where close, else 255


def image_probs(probs: torch.Tensor, j: int, hw: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Image j's probabilities (C, H, W) at its own `size`, from the letterboxed (h, w) = hw region of the batch's
    (B, C, h', w'). C float maps at the image's size: for a large image, decode resizes tile by tile instead."""
    p = probs[j, :, : hw[0], : hw[1]]
    if tuple(hw) != tuple(size):
        p = nn.functional.interpolate(p[None], size=size, mode="bilinear", align_corners=False)[0]
    return p


BAND_BYTES = 64 << 20  # float working memory of one band of a prediction resized to its image's size


def _source_index(n_in: int, n_out: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each of n_out positions along one axis: the two input positions it lies between and the weight (float32)
    of the second, as torch's bilinear resize (align_corners=False) computes them."""
    src = ((torch.arange(n_out, device=device, dtype=torch.float32) + 0.5) * (n_in / n_out) - 0.5).clamp_min(0)
    lo = src.floor().long().clamp_max(n_in - 1)
    return lo, (lo + 1).clamp_max(n_in - 1), src - lo


def resized_tiles(x: torch.Tensor, size: tuple[int, int]) -> Iterator[tuple[slice, slice, torch.Tensor]]:
    """x (C, h, w) resized bilinearly to size (H, W) as nn.functional.interpolate(align_corners=False) resizes it
    (the same weights, in the same order: equal up to float rounding), a tile at a time: (rows, columns, float
    (C, rows, columns)). The float memory stays within BAND_BYTES whatever the size, so a huge image costs its
    uint8 outputs, not C float maps of its size."""
    (c, h, w), (out_h, out_w) = x.shape, size
    y0, y1, wy = _source_index(h, out_h, x.device)
    x0, x1, wx = _source_index(w, out_w, x.device)
    x = x.float()
    tile_w = max(1, BAND_BYTES // (8 * c * h))  # a column tile's input rows resized along the width, twice over
    band = max(1, BAND_BYTES // (16 * c * min(tile_w, out_w)))  # about four (C, band, tile) float temporaries
    for left in range(0, out_w, tile_w):
        cols = slice(left, min(left + tile_w, out_w))
        across = x[..., x0[cols]] * (1 - wx[cols]) + x[..., x1[cols]] * wx[cols]  # (C, h, columns)
        for top in range(0, out_h, band):
            rows = slice(top, min(top + band, out_h))
            wb = wy[rows].view(1, -1, 1)
            yield rows, cols, across[:, y0[rows]] * (1 - wb) + across[:, y1[rows]] * wb


def unresized(hws: list, sizes: list) -> list[int]:
    """Positions in a batch of the images whose letterboxed region (h, w) is already their own size: their
    predictions need no resizing, so a task can reduce and copy them together (decode_batch)."""
    return [j for j, (hw, size) in enumerate(zip(hws, sizes, strict=True)) if tuple(hw) == tuple(size)]


def _rows(batch, same: list[int]):
    """The rows `same` of a batched tensor (or of each tensor of a dict), without an indexing kernel when all."""
    if isinstance(batch, dict):
        return {k: _rows(v, same) for k, v in batch.items()}
    return batch if len(same) == len(batch) else batch[same]


def pair_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-pixel loss (B, H, W) against target long (B, H, W, 2): -log(p_a + p_b) where the pixel has a pair
    (a, b) = target[..., 0], target[..., 1] (a partial label: either class is right), -log p_a where b is 255,
    0 where a is 255 (ignored)."""
    first, second = target[..., 0], target[..., 1]
    a = first.masked_fill(first == IGNORE, 0)
    b = torch.where(second == IGNORE, a, second)
    la, lb = logits.gather(1, a[:, None])[:, 0], logits.gather(1, b[:, None])[:, 0]
    picked = torch.where(second == IGNORE, la, torch.logaddexp(la, lb))
    return (logits.logsumexp(1) - picked).masked_fill(first == IGNORE, 0.0)


def restrict_to_image_labels(
    probs: torch.Tensor, labels: list[dict[int, int]], background: bool = True
) -> torch.Tensor:
    """Probabilities (B, C, H, W) with each image's classes limited to the background (where the label set has one)
    and those its image-level labels name, renormalised: p(c | x, c among the image's classes). A confusion with a
    class the image does not hold becomes the likeliest class it does hold."""
    keep = torch.zeros(probs.shape[:2], dtype=probs.dtype)  # made on the CPU: indexing a GPU tensor syncs
    keep[:, 0] = float(background)
    for b, classes in enumerate(labels):
        keep[b, list(classes)] = 1.0
    restricted = probs * keep.to(probs.device, non_blocking=True)[:, :, None, None]
    return restricted / restricted.sum(1, keepdim=True).clamp_min(1e-12)


@dataclass
class SemanticTask:
    class_names: list[str]
    name: str = "semantic"
    metric: str = "miou"  # the headline figure in logs, tables and plots
    metric_label: str = "mIoU"
    class_inputs: ClassVar[bool] = False  # no weak-label-conditioned variant (W-RSIS is instance-only)
    # pseudo-label writes on threads beside the loop pay: Pillow's PNG encoder and file writes release the GIL
    writes_release_gil: ClassVar[bool] = True
    tiles: ClassVar[bool] = True  # images beyond data.window are predicted in sliding windows (engine.infer)
    # image id -> {class id: count}: infer restricts each image's classes to these (pseudo.image_labels)
    weak: dict | None = field(default=None, repr=False)
    pair_margin: float | None = None  # decode also names the runner-up class within this margin (pseudo.pair_margin)
    background: bool = True  # class 0 is a background (no object), not a class of its own

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def build_model(self, m: ModelConfig) -> tuple[nn.Module, str]:
        from budgetseg.models.deeplab import build_deeplab

        return build_deeplab(self.num_classes, encoder=m.encoder, encoder_weights=m.encoder_weights)

    def target(self, sample: Sample) -> np.ndarray:
        """Dense training target: uint8 (H, W), 255 = ignore."""
        return sample.semantic

    def forward(self, model: nn.Module, x: torch.Tensor, targets: torch.Tensor, progress: float = 1.0) -> torch.Tensor:
        """Training forward pass: logits (B, C, H, W)."""
        return model(x)

    def loss(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """(cross-entropy over non-ignored pixels, no terms beside it); each image's pixels weighted by weight (B,).
        target long (B, H, W), or (B, H, W, 2) with pseudo-label pairs (pair_cross_entropy)."""
        if target.ndim == 4:
            per_px, target = pair_cross_entropy(logits, target), target[..., 0]
        else:
            per_px = nn.functional.cross_entropy(logits, target, ignore_index=IGNORE, reduction="none")
        valid = (target != IGNORE).float()
        w = weight.view(-1, 1, 1) * valid
        return (per_px * w).sum() / valid.sum().clamp(min=1.0), {}

    def consistency_loss(self, logits: torch.Tensor, teacher: torch.Tensor, threshold: float) -> torch.Tensor:
        """Cross-entropy of logits (B, C, H, W) against the argmax of teacher logits (B, C, H, W) where the teacher's
        softmax is >= threshold, averaged over all pixels (FixMatch: the confident share sets the strength)."""
        conf, label = teacher.float().softmax(1).max(1)
        per_px = nn.functional.cross_entropy(logits.float(), label, reduction="none")
        return (per_px * (conf >= threshold)).mean()

    def infer(self, model: nn.Module, x: torch.Tensor, tta: bool = False, scales=(1.0,), ids=None) -> torch.Tensor:
        """Softmax probabilities (B, C, H, W), averaged over the input `scales` (sides rounded to multiples of
        16) and, with tta, over the mirrored batch too; with `weak` set, restricted to the classes of the images
        `ids` (restrict_to_image_labels)."""
        h, w = x.shape[-2:]
        total = 0.0
        for s in scales:
            xs = x
            if s != 1.0:
                size = (max(16, round(h * s / 16) * 16), max(16, round(w * s / 16) * 16))
                xs = nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
            for flip in (False, True) if tta else (False,):
                xi = xs.flip(-1) if flip else xs
                p = model(xi).float().softmax(1)
                p = p.flip(-1) if flip else p
                if p.shape[-2:] != (h, w):
                    p = nn.functional.interpolate(p, size=(h, w), mode="bilinear", align_corners=False)
                total = total + p
        probs = total / (len(scales) * (2 if tta else 1))
        if self.weak is None:
            return probs
        return restrict_to_image_labels(probs, [self.weak[i] for i in ids], self.background)

    def _maps(self, p: torch.Tensor) -> torch.Tensor:
        """uint8 (..., K, H, W) of probabilities (..., C, H, W): label, round(255 * confidence) and, with
        pair_margin, the runner-up where within the margin (else 255)."""
        if self.pair_margin is not None:
            values, index = p.topk(2, dim=-3)
            (conf, conf2), (label, second) = values.unbind(-3), index.unbind(-3)
            second = torch.where(conf - conf2 < self.pair_margin, second, IGNORE)
            maps = [label, conf.mul(255).round_(), second]
        else:  # max, not argmax: the same first-maximum index, many times faster on CPU
            conf, label = p.max(-3)
            maps = [label, conf.mul(255).round_()]
        return torch.stack([m.to(torch.uint8) for m in maps], -3)

    def decode(self, probs: torch.Tensor, j: int, hw: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
        """Image j's maps (_maps: K, H, W) at its own `size`, from the letterboxed (h, w) = hw region of the
        probabilities (B, C, h', w'), resized tile by tile (resized_tiles: memory bounded whatever the size). They
        are taken where `probs` lie: only uint8 maps, in one copy, reach the CPU, not C float maps. On CUDA the copy
        is asynchronous: read it (finish) only once the device has reached this point (engine.infer.predict waits)."""
        p = probs[j, :, : hw[0], : hw[1]]
        if tuple(hw) == tuple(size):
            return self._maps(p).to("cpu", non_blocking=True)
        maps = None
        for rows, cols, tile in resized_tiles(p, size):
            m = self._maps(tile)
            maps = m.new_empty((m.shape[0], *size)) if maps is None else maps
            maps[:, rows, cols] = m
        return maps.to("cpu", non_blocking=True)

    def decode_batch(self, probs: torch.Tensor, hws: list, sizes: list) -> list[torch.Tensor]:
        """decode of every image of the batch; those that need no resizing reduced and copied together (one copy,
        a few kernels per batch instead of per image: at 128 px a GPU's launches, not its arithmetic, set the
        pace). The same values as image by image."""
        same = unresized(hws, sizes)
        out = [None if j in same else self.decode(probs, j, hws[j], sizes[j]) for j in range(len(hws))]
        if same:
            maps = self._maps(_rows(probs, same)).to("cpu", non_blocking=True)
            for k, j in enumerate(same):
                out[j] = maps[k, :, : hws[j][0], : hws[j][1]]
        return out

    def finish(self, maps: torch.Tensor) -> SemanticPrediction:
        """The prediction of a decoded image once its copy has landed."""
        return SemanticPrediction(*np.ascontiguousarray(maps.numpy()))

    # pseudo-labels: PNGs under out_dir (see pseudolabel.py)
    def pseudo_todo(self, out_dir: Path, ids: list[str]) -> list[str]:
        return [i for i in ids if not (out_dir / "raw" / f"{i}.png").is_file()]

    def write_pseudo(self, out_dir: Path, sample: Sample, pred: SemanticPrediction) -> None:
        write_semantic(out_dir, sample.id, pred.label, pred.confidence, pred.second)

    def finalize_pseudo(self, out_dir: Path, ds, ids: list[str], cfg: PseudoConfig, d: Dist = SINGLE) -> dict:
        return finalize(out_dir, ds, ids, self.class_names, cfg, d=d)

    def pseudo_target(self, out_dir: Path, image_id: str, size: tuple[int, int]) -> np.ndarray:
        """uint8 (H, W): labels/; with pairs/ (pseudo.pair_margin) (H, W, 2): where a pixel has a pair, f_theta's
        class and the runner-up, whatever the class quantile dropped; elsewhere labels/ and 255."""
        labels = read_label_png(out_dir / "labels" / f"{image_id}.png")
        if not (out_dir / "pairs" / f"{image_id}.png").is_file():
            return labels
        second = read_label_png(out_dir / "pairs" / f"{image_id}.png")
        raw = read_label_png(out_dir / "raw" / f"{image_id}.png")
        return np.stack([np.where(second != IGNORE, raw, labels), second], axis=-1)

    def evaluator(self) -> SemanticEvaluator:
        return SemanticEvaluator(self.class_names)

    def score(self, ev: SemanticEvaluator, sample: Sample, pred: SemanticPrediction) -> np.ndarray:
        """Add one prediction to the evaluator; returns the label map uint8 (H, W) for previews."""
        ev.process(sample.semantic, pred.label)
        return pred.label


@dataclass
class InstanceTask:
    """RSIS: one instance per decoder step (mask, class, stop flag), Hungarian-matched to the ground truth.

    With class_inputs it is W-RSIS: each step is also given the class of the object it must produce. Training
    takes the classes from the targets; inference takes them from `weak` (image id -> {class id: count}, the
    IL+C labels), emits exactly those objects (no stop test) and gives them the known classes.
    """

    class_names: list[str]
    steps: int = 10
    loss_weights: tuple[float, float, float] = (1.0, 0.1, 0.5)  # mask (soft IoU), class, stop
    class_inputs: bool = False
    curriculum: float = 0.0  # fraction of training over which the step cap grows from 1 to `steps`
    mask_bce: float = 0.0  # weight of a pixelwise BCE on matched masks, beside the soft IoU
    weak: dict | None = field(default=None, repr=False)  # IL+C labels of the images W-RSIS predicts
    name: str = "instance"
    metric: str = "ap50"
    # RLE encoding and JSON hold the GIL: writer threads only contend with the loop's thread for it (an H200's
    # instance pseudo-labelling: 289-318 img/s with four of them, 392 without)
    writes_release_gil: ClassVar[bool] = False
    background: ClassVar[bool] = True  # RSIS's class 0 is "no object"
    tiles: ClassVar[bool] = False  # an instance sequence does not tile: images beyond data.window shrink to it
    metric_label: str = "AP50"
    _pseudo: dict = field(default_factory=dict, repr=False)  # pseudo_labels.json, read once per folder

    def build_model(self, m: ModelConfig) -> tuple[nn.Module, str]:
        from budgetseg.models.rsis import build_rsis

        return build_rsis(
            len(self.class_names),
            encoder=m.encoder,
            encoder_weights=m.encoder_weights,
            steps=self.steps,
            class_inputs=self.class_inputs,
        )

    def target(self, sample: Sample) -> np.ndarray:
        """uint8 (H, W, 2): class map and instance-index map, 255 = ignore (see instance.py)."""
        h, w = sample.size
        return instance_target(sample.instance_masks, sample.instance_classes, h, w, sample.semantic == IGNORE)

    def forward(self, model: nn.Module, x: torch.Tensor, targets: torch.Tensor, progress: float = 1.0) -> dict:
        """Training forward pass at `progress` (fraction of training done), run for only as many steps as the
        batch's most crowded image needs (+1 for a negative stop flag; the decoder costs per step), capped by
        the curriculum (`curriculum_steps`). W-RSIS gets each image's classes in emission order (class id
        ascending), then 0 ("no more objects")."""
        steps = min(steps_for(targets, self.steps), curriculum_steps(progress, self.steps, self.curriculum))
        if not self.class_inputs:
            return model(x, steps=steps)
        seqs = [instances_from_target(t)[1].tolist() for t in targets]
        return self._given(model, x, seqs, steps)

    def _given(self, model: nn.Module, x: torch.Tensor, seqs: list[list[int]], steps: int) -> dict:
        """W-RSIS outputs for class sequences `seqs` (one per image), cut or padded with 0 to `steps`."""
        given = torch.zeros(len(seqs), steps, dtype=torch.long, device=x.device)
        for b, seq in enumerate(seqs):
            seq = seq[:steps]
            given[b, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        return model(x, classes=given) | {"given": given}

    def loss(self, out: dict, target: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """(RSIS loss, its terms: mask, class, stop, bce batch means, detached) of outputs against targets."""
        mw, cw, sw = self.loss_weights
        terms: dict[str, torch.Tensor] = {}
        loss = rsis_loss(out, target, weight, mask_w=mw, class_w=cw, stop_w=sw, bce_w=self.mask_bce, terms=terms)
        return loss, terms

    def infer(self, model: nn.Module, x: torch.Tensor, tta: bool = False, scales=(1.0,), ids=None) -> dict:
        """Raw RSIS outputs for the batch of images `ids` (test-time augmentation does not apply to instance
        sequences). W-RSIS runs as many steps as the most crowded image's IL+C counts."""
        if not self.class_inputs:
            return model(x)
        if self.weak is None or ids is None:
            raise BudgetsegError("W-RSIS needs the IL+C labels of the images it predicts")
        seqs = [class_sequence(self.weak[i]) for i in ids]
        return self._given(model, x, seqs, max(1, max(map(len, seqs))))

    def decode(self, out: dict, j: int, hw: tuple[int, int], size: tuple[int, int]) -> dict:
        """Image j's step outputs at its own `size` (instance.step_outputs), on their way to the CPU (asynchronously
        from a GPU: engine.infer.predict waits for the device before `finish` reads them)."""
        masks = out["masks"][j : j + 1, :, : hw[0], : hw[1]]
        one = {"masks": masks, "classes": out["classes"][j : j + 1], "stop": out["stop"][j : j + 1]}
        steps = step_outputs(one, 0, non_blocking=True)
        if tuple(hw) != tuple(size):  # the masks resized tile by tile: T float masks of its size could not fit
            bits = torch.empty((masks.shape[1], *size), dtype=torch.bool, device=masks.device)
            for rows, cols, tile in resized_tiles(masks[0], size):
                bits[:, rows, cols] = mask_bits(tile)
            steps["masks"] = bits.to("cpu", non_blocking=True)
        if "given" in out:
            steps["given"] = out["given"][j].to("cpu", non_blocking=True)
        return steps

    def decode_batch(self, out: dict, hws: list, sizes: list) -> list[dict]:
        """decode of every image of the batch; those that need no resizing reduced and copied together
        (instance.batch_step_outputs: three copies per batch instead of three per image; RSIS inference at 128 px
        is bound by launches and copies, not arithmetic). The same values as image by image."""
        same = unresized(hws, sizes)
        steps = [None if j in same else self.decode(out, j, hws[j], sizes[j]) for j in range(len(hws))]
        if same:
            rows = _rows({k: out[k] for k in ("stop", "classes", "masks", "given") if k in out}, same)
            host = batch_step_outputs(rows, non_blocking=True)
            given = rows["given"].to("cpu", non_blocking=True) if "given" in rows else None
            for k, j in enumerate(same):
                h, w = hws[j]
                steps[j] = {"objectness": host["objectness"][k], "probs": host["probs"][k]}
                steps[j]["masks"] = host["masks"][k, :, :h, :w]
                if given is not None:
                    steps[j]["given"] = given[k]
        return steps

    def finish(self, steps: dict) -> list:
        """The instances [(mask bool (H, W), class id, score)] of a decoded image, once its copies have landed."""
        if "given" in steps:
            return select_given(steps, steps["given"])
        return select_instances(steps)

    def evaluator(self) -> InstanceEvaluator:
        return InstanceEvaluator(self.class_names)

    def score(self, ev: InstanceEvaluator, sample: Sample, preds: list) -> np.ndarray:
        """Add one prediction to the evaluator; returns its instance-index map (H, W) for previews. The semantic
        mask's 255 pixels are void, except crowd regions (also 255 there), which the evaluator scores as COCO does."""
        h, w = sample.size
        masks = np.array([m for m, _, _ in preds], bool).reshape(-1, h, w)
        classes = np.array([c for _, c, _ in preds], np.int64)
        scores = np.array([s for _, _, s in preds], np.float64)
        ev.process(
            sample.id,
            sample.instance_masks,
            sample.instance_classes,
            masks,
            classes,
            scores,
            ignore=sample.semantic == IGNORE,
            crowd=sample.crowd,
        )
        return paint(masks, scores).astype(np.uint8)  # the most confident instance ends on top, as SBD scores it

    # pseudo-labels: COCO JSON under out_dir (see pseudo_instances.py)
    def pseudo_todo(self, out_dir: Path, ids: list[str]) -> list[str]:
        return [i for i in ids if not (out_dir / "pred" / f"{i}.json").is_file()]

    def write_pseudo(self, out_dir: Path, sample: Sample, preds: list) -> None:
        write_instances(out_dir, sample.id, sample.size, preds)

    def finalize_pseudo(self, out_dir: Path, ds, ids: list[str], cfg: PseudoConfig, d: Dist = SINGLE) -> dict:
        return finalize_instances(out_dir, ds, ids, cfg, d=d)

    def pseudo_target(self, out_dir: Path, image_id: str, size: tuple[int, int]) -> np.ndarray:
        key = str(out_dir)
        if key not in self._pseudo:
            self._pseudo = {key: load_pseudo_labels(out_dir / "pseudo_labels.json")}
        h, w = size
        items = self._pseudo[key].get(image_id, [])
        decoded = [(mask_utils.decode(r).astype(bool), c, crowd, s) for r, c, crowd, s in items]
        kept, masks, ignore = paint_order(decoded, h, w)  # largest first; equal areas: the confident on top
        return instance_target(masks, np.array([c for _, c, _ in kept], np.int64), h, w, ignore)


def make_task(
    name: str,
    class_names: list[str],
    model: ModelConfig | None = None,
    annotator: bool = False,
    background: bool = True,
):
    """The task object of a run: `semantic` (DeepLabv3+) or `instance` (RSIS; for the annotator, W-RSIS when
    model.class_inputs is set). background: whether class 0 is a background (the instance task's always is)."""
    if name == "semantic":
        return SemanticTask(class_names, background=background)
    if name == "instance":
        m = model or ModelConfig()
        return InstanceTask(
            class_names,
            steps=m.steps,
            loss_weights=tuple(m.loss_weights),
            curriculum=m.curriculum,
            mask_bce=m.mask_bce,
            class_inputs=annotator and m.class_inputs,
        )
    raise BudgetsegError(f"unknown task {name!r} (semantic or instance)")
