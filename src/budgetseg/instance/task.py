"""Instance segmentation (RSIS, W-RSIS): one instance per decoder step. InstanceTask implements
budgetseg.task.Task."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from budgetseg.config import ModelConfig
from budgetseg.data.sample import IGNORE, Sample
from budgetseg.engine.resize import batch_rows, resized_tiles, unresized
from budgetseg.errors import BudgetsegError
from budgetseg.instance.cvppp import paint
from budgetseg.instance.decode import batch_step_outputs, mask_bits, select_given, select_instances, step_outputs
from budgetseg.instance.matching import (
    MAX_OBJECTS,
    curriculum_steps,
    instance_target,
    instances_from_target,
    rsis_loss,
    steps_for,
)
from budgetseg.instance.metrics import InstanceEvaluator
from budgetseg.instance.outputs import InstanceItem, InstancePredictionFiles, instance_item
from budgetseg.instance.pseudo import InstancePseudoLabels
from budgetseg.task import PLAIN, InferOptions, Instance


def class_sequence(counts: dict[int, int]) -> list[int]:
    """The classes W-RSIS is given, one per step: class id ascending, each repeated `count` times (the order
    training presents the ground-truth instances in: instance.matching)."""
    return [c for c in sorted(counts) for _ in range(counts[c])]


@dataclass(frozen=True)
class InstanceTask:
    """RSIS: one instance per decoder step (mask, class, stop flag), Hungarian-matched to the ground truth.

    With class_inputs it is W-RSIS: each step is also given the class of the object it must produce. Training
    takes the classes from the targets; inference takes them from the IL+C labels of the images it predicts
    (InferOptions.weak: image id -> {class id: count}), emits exactly those objects (no stop test) and gives them
    the known classes. RSIS emits steps until the objectness first falls below stop_threshold.
    """

    class_names: list[str]
    category_ids: list[int] | None = None  # task.Task's: the ids predict's COCO results carry
    steps: int = 10
    loss_weights: tuple[float, float, float] = (1.0, 0.1, 0.5)  # mask (soft IoU), class, stop
    class_inputs: bool = False
    curriculum: float = 0.0  # fraction of training over which the step cap grows from 1 to `steps`
    mask_bce: float = 0.0  # weight of a pixelwise BCE on matched masks, beside the soft IoU
    stop_threshold: float = 0.5  # model.stop_threshold
    name: ClassVar[str] = "instance"
    metric: ClassVar[str] = "ap50"
    metric_label: ClassVar[str] = "AP50"
    # the CVPPP leaf-segmentation challenge's figures (instance.cvppp); tables show the first two
    extra_metrics: ClassVar[tuple] = (
        ("sbd", "SBD", True),
        ("abs_dic", "|DiC|", False),
        ("fbd", "FBD", True),
        ("dic", "DiC", False),
    )
    background: ClassVar[bool] = True  # RSIS's class 0 is "no object"
    max_objects: ClassVar[int | None] = MAX_OBJECTS  # instance_target's uint8 map: 0 none, 1..254, 255 ignored
    tiles: ClassVar[bool] = False  # an instance sequence does not tile: images beyond data.window shrink to it
    supports_tta: ClassVar[bool] = False  # test-time augmentation does not apply to instance sequences
    trains_on_objects: ClassVar[bool] = True  # crowd regions are ignored, not objects
    preview_classes: ClassVar[bool] = False  # previews hold instance indices, each instance in its own colour
    stop_test: ClassVar[bool] = True  # predictions end where the objectness falls below stop_threshold

    def build_model(self, m: ModelConfig) -> tuple[nn.Module, str]:
        from budgetseg.models.rsis import build_rsis

        return build_rsis(
            len(self.class_names),
            encoder=m.encoder,
            encoder_weights=m.encoder_weights,
            steps=self.steps,
            class_inputs=self.class_inputs,
        )

    def adapt_state(self, model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A W-RSIS state dict for a plain RSIS `model`: RSIS.adapt_state drops the class inputs' channels."""
        return model.adapt_state(state)

    def target(self, sample: Sample) -> np.ndarray:
        """uint8 (H, W, 2): class map and instance-index map, 255 = ignore (see instance.matching)."""
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

    def consistency_loss(self, out: dict, teacher: torch.Tensor, threshold: float) -> torch.Tensor:
        raise BudgetsegError("online consistency (consistency) works for the semantic task only")

    def infer(self, model: nn.Module, x: torch.Tensor, ids: Sequence[str] = (), options: InferOptions = PLAIN) -> dict:
        """Raw RSIS outputs for the batch of images `ids` (test-time augmentation does not apply to instance
        sequences). W-RSIS runs as many steps as the most crowded image's IL+C counts (options.weak)."""
        if not self.class_inputs:
            return model(x)
        if options.weak is None:
            raise BudgetsegError("W-RSIS needs the IL+C labels of the images it predicts")
        seqs = [class_sequence(options.weak[i]) for i in ids]
        return self._given(model, x, seqs, max(1, max(map(len, seqs))))

    def decode(self, out: dict, j: int, hw: tuple[int, int], size: tuple[int, int]) -> dict:
        """Image j's step outputs at its own `size` (instance.decode.step_outputs), on their way to the CPU
        (asynchronously from a GPU: engine.infer.predict waits for the device before `finish` reads them)."""
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

    def decode_batch(self, out: dict, hws: list, sizes: list, options: InferOptions = PLAIN) -> list[dict]:
        """decode of every image of the batch; those that need no resizing reduced and copied together
        (instance.decode.batch_step_outputs: three copies per batch instead of three per image; RSIS inference at 128 px
        is bound by launches and copies, not arithmetic). The same values as image by image."""
        same = unresized(hws, sizes)
        steps = [None if j in same else self.decode(out, j, hws[j], sizes[j]) for j in range(len(hws))]
        if same:
            rows = batch_rows({k: out[k] for k in ("stop", "classes", "masks", "given") if k in out}, same)
            host = batch_step_outputs(rows, non_blocking=True)
            given = rows["given"].to("cpu", non_blocking=True) if "given" in rows else None
            for k, j in enumerate(same):
                h, w = hws[j]
                steps[j] = {"objectness": host["objectness"][k], "probs": host["probs"][k]}
                steps[j]["masks"] = host["masks"][k, :, :h, :w]
                if given is not None:
                    steps[j]["given"] = given[k]
        return steps

    def finish(self, steps: dict) -> list[Instance]:
        """The instances [(mask bool (H, W), class id, score)] of a decoded image, once its copies have landed."""
        if "given" in steps:
            return select_given(steps, steps["given"])
        return select_instances(steps, self.stop_threshold)

    def result(self, prediction: list[Instance]) -> list[Instance]:
        """The instances [(mask bool (H, W), class id, score)]."""
        return prediction

    def evaluator(self) -> InstanceEvaluator:
        return InstanceEvaluator(self.class_names)

    def score(self, ev: InstanceEvaluator, sample: Sample, preds: list[Instance]) -> np.ndarray:
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

    @staticmethod
    def preview_truth(sample: Sample) -> np.ndarray:
        """0 background, k + 1 on instance k (later over earlier), 255 where the ground truth is ignored."""
        shown = np.where(sample.semantic == IGNORE, IGNORE, 0).astype(np.uint8)
        for k, m in enumerate(sample.instance_masks):
            shown[m] = k + 1
        return shown

    def overlay_index(self, prediction: list[Instance], size: tuple[int, int]) -> tuple[np.ndarray, int]:
        """Instances in palette colours 1, 2, ... (most confident first), the most confident painted last so that
        it lies on top."""
        index = np.zeros(size, np.uint8)
        order = sorted(range(len(prediction)), key=lambda k: -prediction[k][2])
        for rank in reversed(range(len(order))):
            index[prediction[order[rank]][0]] = rank % 254 + 1  # 255 is VOC's border colour, not an instance's
        return index, 1

    def pseudo_labels(self, folder: Path) -> InstancePseudoLabels:
        return InstancePseudoLabels(Path(folder))

    def prediction_files(self, out: Path) -> InstancePredictionFiles:
        stop = None if self.class_inputs else self.stop_threshold  # W-RSIS emits the objects it is given
        return InstancePredictionFiles(Path(out), list(self.class_names), self.category_ids, stop)

    def export_item(self, sample: Sample, image: Path, source: str = "strong") -> InstanceItem:
        """The dataset's objects, the semantic mask's 255 pixels over them."""
        masks, classes = sample.instance_masks, sample.instance_classes
        return instance_item(sample.id, source, image, masks, classes, [None] * len(classes), sample.semantic == IGNORE)
