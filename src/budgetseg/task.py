"""The one seam between semantic and instance segmentation: the `Task` Protocol that both tasks implement
(budgetseg.semantic.task.SemanticTask, budgetseg.instance.task.InstanceTask; budgetseg.tasks.make_task builds
one), and the types that cross it.

A task says what its network is, its training target and loss, how raw outputs become predictions, which
evaluator scores them, and which files hold its labels (pseudo-labels in a run folder, predictions, exports).
The engine, the pipeline and the practitioner's loop only talk to a task through this Protocol. Tasks hold no
per-run state: what changes between uses (the weak labels of the images being predicted, test-time augmentation,
semantic pseudo-label pairs) comes in an InferOptions, and a pseudo-label folder is an object of its own
(PseudoLabels) made per folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from budgetseg.config import ModelConfig, PseudoConfig
from budgetseg.data.sample import Sample, SegDataset
from budgetseg.dist import Dist
from budgetseg.weak import WeakLabels

Instance = tuple[np.ndarray, int, float]  # (mask bool (H, W), class id, score in [0, 1])


@dataclass(frozen=True)
class InferOptions:
    """How a network predicts in one use (evaluation, pseudo-labelling, predict), passed to Task.infer and
    Task.decode_batch. Options a task has no use for are ignored."""

    tta: bool = False  # semantic: average the class probabilities over the mirror too
    scales: tuple[float, ...] = (1.0,)  # semantic: and over these input scales
    # the images' IL / IL+C labels: the semantic task restricts each image's classes to them (pseudo.image_labels),
    # W-RSIS is given them (it needs them); None: none known
    weak: WeakLabels | None = None
    # semantic: also name the runner-up class where it lies within this probability margin (pseudo.pair_margin)
    pair_margin: float | None = None
    # semantic: per-class factors on the probabilities, renormalised (pseudo.align: semantic/align.py)
    class_weights: tuple[float, ...] | None = None


PLAIN = InferOptions()  # one image, as it is: no test-time augmentation, no weak labels, no pairs


class Evaluator(Protocol):
    """Accumulates scored images (through Task.score); evaluate -> {"<metric>": value, ...} (None: undefined)."""

    def evaluate(self, gather: bool = True) -> dict: ...


class PseudoLabels(Protocol):
    """A task's pseudo-label folder (`folder`, e.g. RUN/pseudo): the only code that writes and reads its files.
    Made per folder by Task.pseudo_labels; it may keep what it has read (per object, never per task)."""

    folder: Path
    score_name: ClassVar[str]  # what review_scores measure, in words
    # whether writing one image's files releases the GIL, so that writer threads beside the loop pay
    writes_release_gil: ClassVar[bool]

    def todo(self, ids: list[str]) -> list[str]:
        """The ids of `ids` whose predictions are not written yet (a resumed run predicts only those)."""
        ...

    def write(self, sample: Sample, prediction: Any) -> None:
        """Write one image's prediction (Task.finish's) atomically; the file marking it done comes last."""
        ...

    def finalize(self, ds: SegDataset, ids: list[str], cfg: PseudoConfig, d: Dist) -> dict:
        """The training labels from the written predictions (thresholds applied) and the summary: how many are kept
        and their quality against the ground truth of `ds` where it has some. Every DDP rank calls it."""
        ...

    def target(self, image_id: str, size: tuple[int, int]) -> np.ndarray:
        """The training target of a pseudo-labelled image of `size` (H, W), in Task.target's form."""
        ...

    def review_scores(self, ids: list[str]) -> dict[str, float]:
        """id -> the errors f_theta itself expects in that image's pseudo-label (higher: review first)."""
        ...

    def export_item(self, pool: SegDataset, image_id: str) -> ExportItem:
        """The pseudo-label of `image_id` as an export writes it (checked against its image's size)."""
        ...


@dataclass
class ExportItem:
    """One exported image and the labels training sees for it, as budgetseg.loop.export writes them; each task's
    subclass (SemanticItem, InstanceItem) says how its labels become each layout's regions."""

    id: str
    source: str  # strong | pseudo
    image: Path
    semantic: np.ndarray  # uint8 (H, W): class ids, 255 = ignore
    first: int  # overlays colour the index map's values from this one on

    @property
    def file_name(self) -> str:
        return self.id + self.image.suffix

    def object_map(self) -> np.ndarray | None:
        """uint8 (H, W) VOC instance map (1..K objects, 255 ignored) where the labels have objects, else None."""
        raise NotImplementedError

    def coco_regions(self, num_classes: int) -> list[tuple[int, np.ndarray, float | None, bool]]:
        """[(class id, or 255 for the ignore category; mask bool (H, W); score or None; crowd)]: COCO annotations."""
        raise NotImplementedError

    def brush_regions(self, num_classes: int) -> tuple[list[tuple[int, np.ndarray, float | None]], float | None]:
        """([(class id or 255 for `ignore`, mask, score)], the image's score or None): Label Studio brush results."""
        raise NotImplementedError

    def index_map(self) -> np.ndarray:
        """uint8 (H, W): the labels as one index map (classes or objects, 255 ignored) for an overlay."""
        raise NotImplementedError

    def legend(self, class_names: list[str]) -> list[tuple[int, str]]:
        """(palette index, what its colour stands for) of index_map's colours, ignore aside."""
        raise NotImplementedError


class PredictionFiles(Protocol):
    """What `budgetseg predict` writes for a task's predictions into one folder, beside the overlays."""

    def paths(self, images: list[Path]) -> list[Path]:
        """Every file it will write for `images` (overlays aside)."""
        ...

    def add(self, k: int, image: Path, prediction: Any) -> list[Path]:
        """Write (or keep for close) the prediction of the k-th image; returns the files written now."""
        ...

    def close(self) -> tuple[list[Path], dict]:
        """Write what is left; (the files written now, the summary's task-specific entries)."""
        ...


@runtime_checkable
class Task(Protocol):
    """Semantic or instance segmentation, as the engine and the pipeline see it. Shapes: images x float
    (B, 3, H, W), normalised; targets long (B, H, W) (semantic) or (B, H, W, 2) (instance: class and object maps,
    budgetseg.instance.matching); 255 = ignore."""

    name: ClassVar[str]  # the task's string form (config key `task`, model files, results.json)
    metric: ClassVar[str]  # the headline figure's key in eval.json and results.json
    metric_label: ClassVar[str]  # its name in logs, tables and plots
    # further figures of every network: (key, label, shown in % like the metric)
    extra_metrics: ClassVar[tuple[tuple[str, str, bool], ...]]
    tiles: ClassVar[bool]  # images beyond data.window are predicted in sliding windows (else shrunk to it)
    supports_tta: ClassVar[bool]  # whether InferOptions.tta and scales change its predictions
    trains_on_objects: ClassVar[bool]  # its targets are object instances (a labelled set without any is refused)
    preview_classes: ClassVar[bool]  # its previews (Task.score's maps) hold class ids, not object indices
    # its predictions end where an objectness falls below its field stop_threshold (model.stop_threshold), which
    # predict and evaluate may replace (dataclasses.replace)
    stop_test: ClassVar[bool]
    class_names: list[str]
    # the dataset's own id of each class 1..K where it has one (COCO's category ids, data.coco.category_map), which
    # COCO files written for the task carry; None: 1..K
    category_ids: list[int] | None
    background: bool  # class 0 is a background (no object), not a class of its own
    class_inputs: bool  # the network is given the images' weak labels (W-RSIS)
    max_objects: ClassVar[int | None]  # the most objects one image's training target holds (None: no limit)

    def build_model(self, m: ModelConfig) -> tuple[nn.Module, str]:
        """(the network, a line on its encoder weights for the log)."""
        ...

    def adapt_state(self, model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A state dict of a related network (f_theta's, for g_phi to start from) made to fit `model`."""
        ...

    def target(self, sample: Sample) -> np.ndarray:
        """Dense training target of a labelled sample: uint8 (H, W) or (H, W, 2), 255 = ignore."""
        ...

    def forward(self, model: nn.Module, x: torch.Tensor, targets: torch.Tensor, progress: float) -> Any:
        """Training forward pass at `progress` (fraction of training done)."""
        ...

    def loss(self, out: Any, target: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """(scalar loss, {term: detached scalar}) of forward's output against targets; image i weighted weight[i]."""
        ...

    def consistency_loss(self, out: Any, teacher: torch.Tensor, threshold: float) -> torch.Tensor:
        """The online weak-to-strong loss of student outputs against teacher outputs (TrainConfig.consistency)."""
        ...

    def infer(self, model: nn.Module, x: torch.Tensor, ids: Sequence[str], options: InferOptions) -> Any:
        """Raw outputs of the batch of images `ids` for decode_batch."""
        ...

    def decode_batch(self, raw: Any, hws: list, sizes: list, options: InferOptions) -> list:
        """Each image's decoded outputs at its own size (H, W), from the letterboxed (h, w) regions `hws` of the
        batch's raw outputs; on their way to the CPU (asynchronously from a GPU: read them only in finish)."""
        ...

    def finish(self, decoded: Any) -> Any:
        """One image's prediction, once its decoded outputs have landed on the CPU."""
        ...

    def result(self, prediction: Any) -> Any:
        """What budgetseg.load_model's predictor returns for a prediction: a label map or instances."""
        ...

    def evaluator(self) -> Evaluator: ...

    def score(self, ev: Evaluator, sample: Sample, prediction: Any) -> np.ndarray:
        """Add one prediction to the evaluator; returns the uint8 (H, W) map kept as a preview."""
        ...

    @staticmethod
    def preview_truth(sample: Sample) -> np.ndarray:
        """A labelled sample's ground truth as a uint8 (H, W) map of score's previews' kind, for picture grids."""
        ...

    def overlay_index(self, prediction: Any, size: tuple[int, int]) -> tuple[np.ndarray, int]:
        """(uint8 (H, W) index map of the prediction of an image of `size`, the first index an overlay colours)."""
        ...

    def pseudo_labels(self, folder: Path) -> PseudoLabels: ...

    def prediction_files(self, out: Path) -> PredictionFiles: ...

    def export_item(self, sample: Sample, image: Path, source: str = "strong") -> ExportItem:
        """The labels of a labelled sample (whose image file is `image`) as an export writes them."""
        ...
