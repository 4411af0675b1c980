"""Trained-network files (model.pt) that carry what they need to run, like torchvision's checkpoints carry
their args: the task, the class names (and their COCO category ids), the model configuration, the letterbox side it
was trained at and the input normalisation, beside the weights.

    {"format": "budgetseg-model", "version": 1, "meta": {...}, "state_dict": {...}}

Files written before the format existed hold the bare state dict; they still load (with meta None).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch
from torch import Tensor, nn

import budgetseg
from budgetseg.config import (
    MAX_INT,
    MAX_SIZE,
    DataConfig,
    ModelConfig,
    check_stop_threshold,
    load_config,
    merge,
    size_multiple,
)
from budgetseg.data.coco import own_category_ids
from budgetseg.data.readers import open_split
from budgetseg.data.sample import check_class_names
from budgetseg.errors import BudgetsegError, input_error
from budgetseg.io import atomic_open
from budgetseg.models.encoders import encoder_mean_std
from budgetseg.task import Task
from budgetseg.tasks import TASKS, make_task, task_class
from budgetseg.torchfile import load_torch_file

FORMAT = "budgetseg-model"
VERSION = 1
NETS = ("annotator", "segmenter")


def model_meta(
    task_name: str,
    net: str,
    class_names: list[str],
    model: ModelConfig,
    data: DataConfig,
    background: bool = True,
    category_ids: list[int] | None = None,
) -> dict:
    """What a trained network needs to run, as plain JSON-able values.

    task_name: semantic | instance; net: annotator (f_theta) | segmenter (g_phi); class_names: background first
    where `background`; category_ids: the COCO category ids of classes 1..K (0..C-1 without background) where it was
    trained on COCO (the ids its COCO results carry), else None (files written before the key: None); size: its
    training crop side (px); scale and window: the working resolution it sees whole images at (DataConfig). mean /
    std: the encoder's input normalisation.
    """
    mean, std = encoder_mean_std(model.encoder)
    return {
        "task": task_name,
        "net": net,
        "class_names": list(class_names),
        "category_ids": list(category_ids) if category_ids is not None else None,
        "background": bool(background),
        "model": dataclasses.asdict(model),
        "size": int(data.size),
        "scale": data.scale,
        "window": data.window,
        "mean": list(mean),
        "std": list(std),
        "budgetseg": budgetseg.__version__,
    }


def net_role(name: str) -> str:
    """annotator or segmenter for the name of a pipeline stage's network: the control annotator_long is an
    annotator, an earlier ST++ round's segmenter_r1 a segmenter. Other names come back as they are."""
    return next((net for net in NETS if name == net or name.startswith(net + "_")), name)


def save_model(path: str | Path, model: nn.Module, meta: dict) -> None:
    """Write model.pt atomically: the weights (on CPU) and `meta` (see model_meta)."""
    write_model(path, {k: v.detach().cpu() for k, v in model.state_dict().items()}, meta)


def write_model(path: str | Path, state: dict[str, Tensor], meta: dict) -> None:
    """Write model.pt atomically: the CPU state dict `state` and `meta`."""
    with atomic_open(path, "wb") as f:
        torch.save({"format": FORMAT, "version": VERSION, "meta": meta, "state_dict": state}, f)


def copy_model(src: str | Path, dst: str | Path, meta: dict) -> None:
    """dst: the weights of model file `src` under `meta` (a cached f_theta taken by a run whose meta differs in
    what does not change the weights, e.g. model.stop_threshold)."""
    write_model(dst, load_model_file(src)[0], meta)


def _is_state_dict(obj: object) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, Tensor) for v in obj.values())


def load_model_file(path: str | Path) -> tuple[dict[str, Tensor], dict | None]:
    """(state dict on CPU, meta) of a model file; meta is None for a file of the old bare-state-dict form.

    One-line errors for a missing, unreadable or foreign file (a training checkpoint last.pt included).
    """
    path = Path(path)
    if path.is_dir():
        raise input_error(path, "is a folder, not a model file")
    if not path.is_file():
        raise input_error(path, "model file is missing")
    obj = load_torch_file(path, "a budgetseg model file")  # tensors, numbers and strings only: runs no code
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        if not isinstance(obj.get("version"), int) or obj["version"] > VERSION:
            raise input_error(path, f"model file version {obj.get('version')!r} is newer than this budgetseg reads")
        if not _is_state_dict(obj.get("state_dict")) or not isinstance(obj.get("meta"), dict):
            raise input_error(path, "damaged budgetseg model file (no weights or no metadata)")
        meta = obj["meta"]
        if isinstance(meta.get("net"), str):  # older files name the stage as net: annotator_long, segmenter_r1
            meta = meta | {"net": net_role(meta["net"])}
        return obj["state_dict"], meta
    if isinstance(obj, dict) and _is_state_dict(obj.get("model")) and "iteration" in obj:
        raise input_error(path, "a training checkpoint, not a trained model; use the model.pt beside it")
    if _is_state_dict(obj):
        return obj, None
    raise input_error(path, "not a budgetseg model file (expected weights and metadata)")


def check_meta(path: str | Path, meta: dict) -> None:
    """One-line error naming `path` when `meta` lacks what build_from_meta needs."""
    need = ("task", "net", "class_names", "model", "size", "mean", "std")
    missing = [k for k in need if k not in meta]
    if missing:
        raise input_error(path, f"model metadata lacks {', '.join(missing)}")
    if meta["task"] not in TASKS or meta["net"] not in NETS:
        raise input_error(path, f"model metadata names task {meta['task']!r}, net {meta['net']!r}")
    multiple = size_multiple(meta["task"])  # as config.validate's data.size
    size = meta["size"]
    if isinstance(size, bool) or not isinstance(size, int) or not multiple <= size <= MAX_SIZE or size % multiple:
        raise input_error(
            path, f"model metadata: size {repr(size)[:40]} is not a multiple of {multiple} in {multiple}..{MAX_SIZE}"
        )
    for key in ("mean", "std"):
        v = meta[key]
        ok = isinstance(v, list) and len(v) == 3 and all(isinstance(x, int | float) and math.isfinite(x) for x in v)
        if not ok or (key == "std" and min(v) <= 0):
            raise input_error(
                path, f"model metadata: {key} {repr(v)[:60]} is not 3 finite numbers" + (", all > 0" * (key == "std"))
            )
    names = meta["class_names"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise input_error(path, "model metadata: class_names is not a list of names")
    check_class_names(path, names, meta.get("background", True) is not False)
    background = meta.get("background", True) is not False
    check_category_ids(path, meta.get("category_ids"), len(names) - background)  # one id per class, not background
    if not isinstance(meta["model"], dict):
        raise input_error(path, "model metadata: model is not a mapping")
    check_resolution_meta(path, meta)


def check_category_ids(path: str | Path, ids: object, classes: int) -> None:
    """One-line error naming `path` unless `ids` is None or one distinct positive COCO category id per class."""
    if ids is None:
        return
    whole = isinstance(ids, list) and all(
        isinstance(i, int) and not isinstance(i, bool) and 0 < i <= MAX_INT for i in ids
    )
    if not whole or len(ids) != classes or len(set(ids)) != classes:
        raise input_error(path, f"model metadata: category_ids {repr(ids)[:60]} are not one distinct id per class")


def check_resolution_meta(path: str | Path, meta: dict) -> None:
    """One-line error naming `path` unless the working resolution and background of `meta` are what DataConfig
    allows (files written before they existed have none: fit, no window, a background)."""
    scale, window, background = meta.get("scale", "fit"), meta.get("window"), meta.get("background", True)
    int_scale = isinstance(scale, int) and not isinstance(scale, bool) and 16 <= scale <= 8192
    if scale not in ("fit", "native") and not int_scale:
        raise input_error(path, f"model metadata: scale {repr(scale)[:40]} is not fit, native or 16..8192 px")
    if window is not None and (not isinstance(window, int) or isinstance(window, bool) or window < 32 or window % 32):
        raise input_error(path, f"model metadata: window {repr(window)[:40]} is not a multiple of 32")
    if not isinstance(background, bool):
        raise input_error(path, "model metadata: background is not true or false")


def model_config(meta: dict) -> ModelConfig:
    """The ModelConfig of `meta`, with the encoder weights left out (they come from the file). Keys a newer
    budgetseg added are dropped: if they changed the network, its weights will not fit and say so."""
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    m = merge(ModelConfig(), {k: v for k, v in meta["model"].items() if k in known}, "model.")
    check_stop_threshold(m.stop_threshold, "model.stop_threshold")  # files written before it: 0.5
    return dataclasses.replace(m, encoder_weights="none")


def build_from_meta(path: str | Path, state: dict[str, Tensor], meta: dict) -> tuple[nn.Module, Task]:
    """(network with the file's weights, in eval mode on CPU; its task object) from load_model_file's output.
    The annotator of a W-RSIS run (model.class_inputs) comes back as W-RSIS."""
    check_meta(path, meta)
    try:
        cfg = model_config(meta)
    except BudgetsegError as err:
        raise input_error(path, f"model metadata: {err}") from None
    names, background = list(meta["class_names"]), bool(meta.get("background", True))
    annotator, ids = meta["net"] == "annotator", meta.get("category_ids")
    task = make_task(meta["task"], names, cfg, annotator=annotator, background=background, category_ids=ids)
    model, _ = task.build_model(cfg)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or extra or shapes:
        first = (missing or extra or shapes)[0]
        raise input_error(
            path,
            f"weights do not fit the network its metadata describes ({len(missing)} missing, {len(extra)} "
            f"unexpected, {len(shapes)} of another shape; first: {first})",
        )
    model.load_state_dict(state)
    return model.eval(), task


def meta_from_run(model_path: Path) -> dict:
    """Meta for an old model file (bare state dict) that lies in a run folder: from the run's config.yaml, and
    the class names from its dataset (which must therefore still be where the config says)."""
    run, net = model_path.parent.parent, model_path.parent.name
    if net not in NETS or not (run / "config.yaml").is_file():
        raise input_error(model_path, "an old model file without metadata, outside a run folder; cannot tell its task")
    try:
        cfg = load_config(run / "config.yaml")
        ds = open_split(cfg.data, cfg.data.train_split)
    except BudgetsegError as err:
        raise input_error(
            model_path,
            f"an old model file without metadata, and its run's dataset (for the class names) cannot be opened ({err})",
        ) from None
    return model_meta(cfg.task, net, list(ds.class_names), cfg.model, cfg.data, ds.background, own_category_ids(ds))


def check_stop_test(path: Path, meta: dict, option: str) -> None:
    """One-line error naming `path` when its network has no stop threshold for `option` to set (semantic)."""
    if not task_class(meta["task"]).stop_test:
        raise input_error(path, f"{option} applies to instance networks; this is a semantic one")


def with_stop_threshold(path: Path, meta: dict, stop_threshold: float | None) -> dict:
    """`meta` with its network's stop threshold (model.stop_threshold) replaced by `stop_threshold` (None: as it
    is); one-line errors for a network without a stop test (semantic) and a value outside (0, 1)."""
    if stop_threshold is None:
        return meta
    check_stop_test(path, meta, "--stop-threshold")
    check_stop_threshold(stop_threshold, "--stop-threshold")
    return meta | {"model": meta["model"] | {"stop_threshold": float(stop_threshold)}}


def check_tta(path: Path, meta: dict, tta: bool, scales: tuple[float, ...]) -> None:
    """One-line errors for test-time augmentation the network at `path` cannot take: it averages class
    probabilities over the mirror and input scales, which the semantic task has and an instance sequence has not."""
    if not tta:
        return
    if not task_class(meta["task"]).supports_tta:
        raise input_error(path, "test-time augmentation (--tta) applies to semantic networks; this is an instance one")
    if not scales or any(not 0 < s <= 4 for s in scales):
        raise BudgetsegError(f"--tta-scales {','.join(f'{s:g}' for s in scales)}: expected scales in (0, 4]")


def tta_summary(tta: bool, scales: tuple[float, ...]) -> dict | None:
    """How predictions were averaged, for summaries: null, or {"mirror": true, "scales": [...]}."""
    return {"mirror": True, "scales": list(scales)} if tta else None
