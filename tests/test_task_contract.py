"""The Task contract: every method of budgetseg.task.Task (and of the pseudo-label folder, the prediction files and
the export items it makes) run on a tiny input, once per task, by one parametrised test base (as
segmentation_models.pytorch checks every model). A third task would add one subclass here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from budgetseg.config import ModelConfig, PseudoConfig
from budgetseg.data.sample import IGNORE, Sample
from budgetseg.dist import SINGLE
from budgetseg.errors import BudgetsegError
from budgetseg.instance.task import InstanceTask
from budgetseg.semantic.task import SemanticTask
from budgetseg.task import PLAIN, ExportItem, InferOptions, Task
from budgetseg.tasks import TASKS, make_task, task_class

NAMES = ["background", "square", "disc"]
S = 32  # a side both networks take (RSIS: a multiple of 32)
NO_WEIGHTS = ModelConfig(encoder_weights=None, steps=3)


class Shapes:
    """Two S x S images, each a square (class 1) and a disc (class 2), a strip of ignored pixels; a SegDataset."""

    class_names, background, has_instances, ids = NAMES, True, True, ["a", "b"]

    def __init__(self, root: Path):
        self.root = root
        for k, i in enumerate(self.ids):
            rng = np.random.default_rng(k)
            Image.fromarray(rng.integers(0, 255, (S, S, 3), dtype=np.uint8)).save(root / f"{i}.png")

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Sample:
        return self.load(self.ids[index])

    def image_path(self, image_id: str) -> Path:
        return self.root / f"{image_id}.png"

    def has_labels(self, image_id: str) -> bool:
        return True

    def load(self, image_id: str, with_image: bool = True) -> Sample:
        shift = self.ids.index(image_id) * 4
        yy, xx = np.mgrid[:S, :S]
        square = (abs(yy - 8 - shift) < 5) & (abs(xx - 8) < 5)
        disc = (yy - 22) ** 2 + (xx - 20 - shift) ** 2 < 25
        semantic = np.where(square, 1, np.where(disc, 2, 0)).astype(np.uint8)
        semantic[-1] = IGNORE
        image = np.asarray(Image.open(self.image_path(image_id)).convert("RGB")) if with_image else None
        image = image if with_image else np.zeros((S, S, 0), np.uint8)
        return Sample(image_id, image, semantic, np.stack([square, disc]), np.array([1, 2], np.int64))


class TaskContract:
    """Every Protocol method of `task`, on Shapes. Subclasses say which task and what its outputs look like."""

    task: Task

    @pytest.fixture
    def data(self, tmp_path) -> Shapes:
        return Shapes(tmp_path)

    @pytest.fixture
    def model(self):
        torch.manual_seed(0)
        model, line = self.task.build_model(NO_WEIGHTS)
        assert isinstance(line, str) and line
        return model

    def options(self, data: Shapes) -> InferOptions:
        return PLAIN

    def test_is_a_task_and_says_what_it_is(self):
        assert isinstance(self.task, Task)  # the Protocol's every member is there
        assert TASKS[self.task.name] is type(self.task) is task_class(self.task.name)
        assert self.task.class_names == NAMES and isinstance(self.task.background, bool)
        assert self.task.category_ids is None  # made without COCO's ids: 1..K
        cls = type(self.task)  # what a task says without a label set
        assert isinstance(cls.metric, str) and isinstance(cls.metric_label, str)
        assert all(len(x) == 3 for x in cls.extra_metrics)
        for flag in (cls.tiles, cls.supports_tta, cls.trains_on_objects, cls.preview_classes, cls.stop_test):
            assert isinstance(flag, bool)
        if cls.stop_test:  # predict and evaluate replace it
            assert 0 < self.task.stop_threshold < 1

    def test_trains_one_step(self, data, model):
        samples = [data.load(i) for i in data.ids]
        targets = torch.from_numpy(np.stack([self.task.target(s) for s in samples])).long()
        assert targets.shape[1:3] == (S, S)
        out = self.task.forward(model.train(), torch.randn(2, 3, S, S), targets, 0.5)
        loss, terms = self.task.loss(out, targets, torch.ones(2))
        loss.backward()
        assert loss.ndim == 0 and torch.isfinite(loss) and all(v.ndim == 0 for v in terms.values())
        state = self.task.adapt_state(model, model.state_dict())
        model.load_state_dict(state)

    def test_predicts_scores_and_shows(self, data, model):
        samples = [data.load(i) for i in data.ids]
        x = torch.randn(2, 3, S, S)
        with torch.no_grad():
            raw = self.task.infer(model.eval(), x, data.ids, self.options(data))
        decoded = self.task.decode_batch(raw, [(S, S), (S, S)], [(S, S), (24, 20)], self.options(data))
        preds = [self.task.finish(d) for d in decoded]
        ev = self.task.evaluator()  # the first at its image's size, the second resized to 24 x 20
        shown = self.task.score(ev, samples[0], preds[0])
        assert shown.dtype == np.uint8 and shown.shape == (S, S)
        assert self.task.metric in ev.evaluate(gather=False)
        index, first = self.task.overlay_index(preds[1], (24, 20))
        assert index.shape == (24, 20) and first in (0, 1)
        self.check_result(self.task.result(preds[1]), (24, 20))
        truth = type(self.task).preview_truth(samples[0])
        assert truth.dtype == np.uint8 and truth.shape == (S, S) and (truth[-1] == IGNORE).all()

    def test_pseudo_label_folder_round_trip(self, data, model, tmp_path):
        labels = self.task.pseudo_labels(tmp_path / "pseudo")
        assert labels.todo(data.ids) == data.ids and isinstance(labels.score_name, str)
        with torch.no_grad():
            raw = self.task.infer(model.eval(), torch.randn(2, 3, S, S), data.ids, self.options(data))
        decoded = self.task.decode_batch(raw, [(S, S)] * 2, [(S, S)] * 2, self.options(data))
        for i, d in zip(data.ids, decoded, strict=True):
            labels.write(data.load(i), self.task.finish(d))
        assert labels.todo(data.ids) == []
        summary = labels.finalize(data, data.ids, PseudoConfig(threshold=0.0), SINGLE)
        assert summary["images"] == 2 and summary["scored_images"] == 2 and self.task.metric in summary
        again = self.task.pseudo_labels(tmp_path / "pseudo")  # a new object reads the files back
        assert again.target("a", (S, S)).shape[:2] == (S, S)
        assert set(again.review_scores(data.ids)) == set(data.ids)
        self.check_item(again.export_item(data, "b"), "pseudo")

    def test_export_item_of_the_labels(self, data):
        item = self.task.export_item(data.load("a", with_image=False), data.image_path("a"))
        self.check_item(item, "strong")
        assert (item.semantic[-1] == IGNORE).all() and item.file_name == "a.png"

    def check_item(self, item: ExportItem, source: str) -> None:
        assert isinstance(item, ExportItem) and item.source == source and item.semantic.shape == (S, S)
        for c, mask, _, crowd in item.coco_regions(len(NAMES)):
            assert (c == IGNORE or 0 < c < len(NAMES)) and mask.shape == (S, S) and isinstance(crowd, bool)
        regions, _ = item.brush_regions(len(NAMES))
        assert all(m.shape == (S, S) for _, m, _ in regions)
        assert item.index_map().shape == (S, S) and item.legend(NAMES)
        objects = item.object_map()
        assert objects is None or objects.shape == (S, S)

    def test_prediction_files(self, data, model, tmp_path):
        files = self.task.prediction_files(tmp_path)
        images = [data.image_path(i) for i in data.ids]
        with torch.no_grad():
            raw = self.task.infer(model.eval(), torch.randn(2, 3, S, S), data.ids, self.options(data))
        decoded = self.task.decode_batch(raw, [(S, S)] * 2, [(S, S)] * 2, self.options(data))
        written = [
            p
            for k, (image, d) in enumerate(zip(images, decoded, strict=True))
            for p in files.add(k, image, self.task.finish(d))
        ]
        done, summary = files.close()
        assert set(written + done) <= set(files.paths(images)) and all(p.is_file() for p in written + done)
        assert summary

    def check_result(self, result, size: tuple[int, int]) -> None:
        raise NotImplementedError


class TestSemanticTask(TaskContract):
    task = make_task("semantic", NAMES)

    def options(self, data: Shapes) -> InferOptions:  # the restriction to each image's classes, and pairs
        return InferOptions(tta=True, scales=(0.5, 1.0), weak={"a": {1: 1}, "b": {2: 1}}, pair_margin=0.3)

    def check_result(self, result, size: tuple[int, int]) -> None:
        assert result.dtype == np.uint8 and result.shape == size

    def test_consistency_loss(self):
        logits = torch.randn(2, 3, S, S, requires_grad=True)
        loss = self.task.consistency_loss(logits, torch.randn(2, 3, S, S), 0.0)
        loss.backward()
        assert loss.ndim == 0 and logits.grad is not None


class TestInstanceTask(TaskContract):
    task = make_task("instance", NAMES, NO_WEIGHTS)

    def check_result(self, result, size: tuple[int, int]) -> None:
        assert all(m.shape == size and m.dtype == bool and 0 < c < len(NAMES) for m, c, _ in result)

    def test_consistency_loss_is_semantic_only(self):
        with pytest.raises(BudgetsegError, match="semantic task only"):
            self.task.consistency_loss({}, torch.zeros(1), 0.5)


class TestWRSISTask(TestInstanceTask):
    task = make_task("instance", NAMES, ModelConfig(encoder_weights=None, steps=3, class_inputs=True), annotator=True)

    def options(self, data: Shapes) -> InferOptions:  # W-RSIS is given each image's IL+C labels
        return InferOptions(weak={"a": {1: 1, 2: 1}, "b": {2: 1}})


def test_tasks_hold_no_per_run_state():
    """Frozen: what changes per use comes in InferOptions or a PseudoLabels object, never by assignment."""
    for task in (SemanticTask(NAMES), InstanceTask(NAMES)):
        with pytest.raises(AttributeError):
            task.class_names = ["x"]
