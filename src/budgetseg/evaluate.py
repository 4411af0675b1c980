"""Score a trained run's networks on any labelled data, without retraining: `budgetseg evaluate RUN --val-root R`.

Results go to RUN/evaluations/<name>/ (<net>/eval.json and previews, evaluation.json; <name> says the data, split and
test-time augmentation); the run's own files stay as they are.
"""

from __future__ import annotations

import dataclasses
import re
from contextlib import nullcontext
from pathlib import Path

from budgetseg.config import TTA_SCALES, load_config
from budgetseg.data.readers import LabelOptions, open_dataset
from budgetseg.dist import init_distributed
from budgetseg.errors import BudgetsegError, input_error
from budgetseg.io import check_run_folder, folder_lock, write_json
from budgetseg.modelfile import NETS, build_from_meta, check_tta, load_model_file, meta_from_run, tta_summary
from budgetseg.runlog import Logger
from budgetseg.stages import evaluate_stage
from budgetseg.task import InferOptions
from budgetseg.weak import from_dataset as weak_from_dataset


def evaluation_name(fmt: str, root: Path, split: str, scales: tuple[float, ...] | None = None) -> str:
    """A folder name for one evaluation set, e.g. voc-fashion-scenes-val, or voc-fashion-scenes-val-tta-0.75-1-1.5
    with test-time augmentation over those scales."""
    tta = f"-tta-{'-'.join(f'{s:g}' for s in scales)}" if scales else ""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{fmt}-{root.resolve().name}-{split}{tta}").strip("-")


def evaluate_run(
    run: str | Path,
    fmt: str | None = None,
    root: str | Path | None = None,
    split: str | None = None,
    tta: bool = False,
    scales: tuple[float, ...] = TTA_SCALES,
) -> dict:
    """{"val": {format, root, split, images, tta}, "annotator": metrics | None, "segmenter": metrics | None} of
    the run's trained networks on `root` (default: the run's own dataset) and `split` (default: its val split);
    tta: semantic networks' test-time augmentation over the mirror and `scales` (predict.predict_images)."""
    run = Path(run)
    cfg = load_config(check_run_folder(run) / "config.yaml")
    fmt = fmt or cfg.data.format
    root = Path(root) if root is not None else Path(cfg.data.root)
    split = split or cfg.data.val_split or "val"
    own = root == Path(cfg.data.root)
    labels = LabelOptions.of(cfg.data) if fmt == cfg.data.format else LabelOptions()  # background, void as the run's
    if not own:  # another dataset: its own label folders (format folders: <root>/masks/)
        labels = dataclasses.replace(labels, masks=None, instance_masks=None)
    val = open_dataset(fmt, root, split, images=cfg.data.images if own else None, labels=labels)
    ids = list(val.ids)
    bare = [i for i in ids if not val.has_labels(i)]
    if not ids or bare:
        raise input_error(root, f"split {split!r} needs labelled images ({len(bare)} of {len(ids)} have no labels)")
    scales = tuple(scales) if tta else (1.0,)
    out = run / "evaluations" / evaluation_name(fmt, root, split, scales if tta else None)
    d = init_distributed()
    log = Logger(run / "log.txt", d.main)
    res: dict = {"val": {"format": fmt, "root": str(root.resolve()), "split": split, "images": len(ids)}}
    res["val"]["tta"] = tta_summary(tta, scales)
    with folder_lock(run) if d.main else nullcontext():  # it writes into the run folder: not beside a running run
        for net in NETS:
            path = run / net / "model.pt"
            if not path.is_file():
                res[net] = None
                continue
            state, meta = load_model_file(path)
            meta = meta or meta_from_run(path)
            check_tta(path, meta, tta, scales)
            if list(meta["class_names"]) != list(val.class_names):
                raise input_error(root, f"classes {val.class_names} differ from the run's {meta['class_names']}")
            model, task = build_from_meta(path, state, meta)
            # W-RSIS is given the IL+C labels an annotator would give (from the masks)
            weak = weak_from_dataset(val, ids) if task.class_inputs else None
            options = InferOptions(tta, scales, weak)
            res[net] = evaluate_stage(net, model.to(d.device), task, val, ids, cfg, out, d, log, options)
    if all(res[n] is None for n in NETS):
        raise BudgetsegError(f"run {run} has no trained network to evaluate")
    if d.main:
        write_json(out / "evaluation.json", res)
    return res
