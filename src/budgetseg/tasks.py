"""The task factory: a task's string form (config key `task`, model files, results.json) -> its Task."""

from __future__ import annotations

from budgetseg.config import ModelConfig
from budgetseg.errors import BudgetsegError
from budgetseg.instance.task import InstanceTask
from budgetseg.semantic.task import SemanticTask
from budgetseg.task import Task

TASKS: dict[str, type[Task]] = {"semantic": SemanticTask, "instance": InstanceTask}
# task name -> (results.json metric key, display label), as the tasks say (Task.metric, Task.metric_label)
METRICS = {name: (cls.metric, cls.metric_label) for name, cls in TASKS.items()}


def task_class(task_name: str) -> type[Task]:
    """The class of the task named `task_name` (semantic | instance), for what it says without a label set:
    its metric, its label, whether it tiles or takes test-time augmentation."""
    if task_name not in TASKS:
        raise BudgetsegError(f"unknown task {task_name!r} ({' or '.join(TASKS)})")
    return TASKS[task_name]


def task_name_of(results: dict) -> str:
    """The task of a results.json (written before the key existed: the semantic task's)."""
    return results.get("task", SemanticTask.name)


def make_task(
    task_name: str,
    class_names: list[str],
    model: ModelConfig | None = None,
    annotator: bool = False,
    background: bool = True,
    category_ids: list[int] | None = None,
) -> Task:
    """The task of a run: `semantic` (DeepLabv3+) or `instance` (RSIS; for the annotator, W-RSIS when
    model.class_inputs is set). background: whether class 0 is a background (the instance task's always is);
    category_ids: the dataset's own ids of classes 1..K (COCO's), None: 1..K."""
    cls = task_class(task_name)
    ids = list(category_ids) if category_ids is not None else None
    if cls is SemanticTask:
        return SemanticTask(class_names, background=background, category_ids=ids)
    m = model or ModelConfig()
    return InstanceTask(
        class_names,
        category_ids=ids,
        steps=m.steps,
        loss_weights=tuple(m.loss_weights),
        curriculum=m.curriculum,
        mask_bce=m.mask_bce,
        stop_threshold=m.stop_threshold,
        class_inputs=annotator and m.class_inputs,
    )
