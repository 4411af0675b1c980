"""Score a trained run's networks on any labelled data, without retraining: `budgetseg evaluate RUN --val-root R`.

Results go to RUN/evaluations/<name>/ (<net>/eval.json and previews, evaluation.json; <name> says the data, split,
test-time augmentation and stop thresholds); the run's own files stay as they are.
"""

from __future__ import annotations

import dataclasses
import re
from contextlib import nullcontext
from pathlib import Path

from budgetseg.config import TTA_SCALES, check_stop_threshold, load_config
from budgetseg.data.readers import OWN_BACKGROUND, LabelOptions, open_dataset, run_background
from budgetseg.data.sample import SegDataset
from budgetseg.dist import init_distributed
from budgetseg.errors import BudgetsegError, input_error
from budgetseg.io import check_run_folder, folder_lock, write_json
from budgetseg.modelfile import (
    NETS,
    build_from_meta,
    check_meta,
    check_stop_test,
    check_tta,
    load_model_file,
    meta_from_run,
    tta_summary,
    with_stop_threshold,
)
from budgetseg.runlog import Logger
from budgetseg.stages import evaluate_stage, stop_threshold_stage
from budgetseg.task import InferOptions
from budgetseg.weak import from_dataset as weak_from_dataset


def evaluation_name(
    fmt: str,
    root: Path,
    split: str,
    scales: tuple[float, ...] | None = None,
    stop_threshold: float | None = None,
    stop_thresholds: tuple[float, ...] = (),
) -> str:
    """A folder name for one evaluation set, e.g. voc-fashion-scenes-val, or voc-fashion-scenes-val-tta-0.75-1-1.5
    with test-time augmentation over those scales; -stop-0.4 with another stop threshold, -stops-0.3-0.5 at several."""
    tta = f"-tta-{'-'.join(f'{s:g}' for s in scales)}" if scales else ""
    stop = f"-stop-{stop_threshold:g}" if stop_threshold is not None else ""
    stop += f"-stops-{'-'.join(f'{t:g}' for t in stop_thresholds)}" if stop_thresholds else ""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{fmt}-{root.resolve().name}-{split}{tta}{stop}").strip("-")


def open_val(run: Path, fmt: str | None, root: str | Path | None, split: str | None) -> tuple:
    """(the run's config, the labelled set to score it on, its format, root and split: `root` in layout `fmt`, split
    `split`, each by default the run's own dataset and val split, and whether that is the run's own val set); one-line
    error unless every image is labelled."""
    cfg = load_config(check_run_folder(run) / "config.yaml")
    fmt = fmt or cfg.data.format
    root = Path(root) if root is not None else Path(cfg.data.root)
    split = split or cfg.data.val_split or "val"
    own = root.resolve() == Path(cfg.data.root).resolve()
    labels = LabelOptions.of(cfg.data) if fmt == cfg.data.format else other_format_labels(cfg.data, fmt)
    if not own:  # another dataset: its own label folders (format folders: <root>/masks/)
        labels = dataclasses.replace(labels, masks=None, instance_masks=None)
    val = open_dataset(fmt, root, split, images=cfg.data.images if own else None, labels=labels)
    bare = [i for i in val.ids if not val.has_labels(i)]
    if not val.ids or bare:
        raise input_error(root, f"split {split!r} needs labelled images ({len(bare)} of {len(val.ids)} have no labels)")
    own_val = own and fmt == cfg.data.format and split == (cfg.data.val_split or "val")
    return cfg, val, fmt, root, split, own_val


def other_format_labels(data, fmt: str) -> LabelOptions:
    """How val in layout `fmt`, not the run's, reads: a run without background (CamVid's) scored on its own
    corrected export (coco, labelstudio, voc) reads it without background too; otherwise the format's defaults."""
    if fmt in OWN_BACKGROUND and not run_background(data):
        return LabelOptions(background=False)
    return LabelOptions()


def check_stop_thresholds(stop_threshold: float | None, stop_thresholds: tuple[float, ...]) -> tuple[float, ...]:
    """The thresholds to score at, ascending, each once; one-line errors for values outside (0, 1) and for both
    options at once."""
    if stop_threshold is not None and stop_thresholds:
        raise BudgetsegError("--stop-threshold and --stop-thresholds: give one (the second scores at each of its own)")
    for t in stop_thresholds:
        check_stop_threshold(t, "--stop-thresholds")
    return tuple(sorted(set(stop_thresholds)))


def evaluate_run(
    run: str | Path,
    fmt: str | None = None,
    root: str | Path | None = None,
    split: str | None = None,
    tta: bool = False,
    scales: tuple[float, ...] = TTA_SCALES,
    stop_threshold: float | None = None,
    stop_thresholds: tuple[float, ...] = (),
) -> dict:
    """{"val": {format, root, split, images, tta, stop_threshold}, "annotator": metrics | None, "segmenter": metrics |
    None, and "annotator_long" / "annotator_long_aug": metrics where the run trained those controls} of the run's
    trained networks on `root` (default: the run's own dataset) and `split` (default: its val
    split); tta: semantic networks' test-time augmentation over the mirror and `scales` (predict.predict_images).
    Instance networks: stop_threshold replaces each one's own (model.stop_threshold); with stop_thresholds, each
    network is scored at every one of them instead (stages.stop_threshold_stage's {"stop_threshold": its own,
    "stop_thresholds": [{"stop_threshold": t, <figures>}, ...]}), to choose the one that makes |DiC| small."""
    run = Path(run)
    cfg, val, fmt, root, split, own = open_val(run, fmt, root, split)
    # the run's own val set is scored as the run scored it: its first data.limit_val images where it set that
    ids = list(val.ids)[: cfg.data.limit_val] if own else list(val.ids)
    stops = check_stop_thresholds(stop_threshold, tuple(stop_thresholds))
    scales = tuple(scales) if tta else (1.0,)
    out = run / "evaluations" / evaluation_name(fmt, root, split, scales if tta else None, stop_threshold, stops)
    d = init_distributed()
    log = Logger(run / "log.txt", d.main)
    res: dict = {"val": {"format": fmt, "root": str(root.resolve()), "split": split, "images": len(ids)}}
    res["val"] |= {"tta": tta_summary(tta, scales), "stop_threshold": stop_threshold}
    with folder_lock(run) if d.main else nullcontext():  # it writes into the run folder: not beside a running run
        for net in EVALUATED:
            path = run / net / "model.pt"
            if not path.is_file():
                if net in NETS:  # the controls are left out where the run did not train them
                    res[net] = None
                continue
            model, task = open_net(path, val, root, (tta, scales), stop_threshold, bool(stops))
            # W-RSIS is given the IL+C labels an annotator would give (from the masks)
            options = InferOptions(tta, scales, weak_from_dataset(val, ids) if task.class_inputs else None)
            args = (net, model.to(d.device), task, val, ids, cfg, out, d, log, options)
            res[net] = stop_threshold_stage(*args, stops) if stops else evaluate_stage(*args)
    if all(res[n] is None for n in NETS):
        raise BudgetsegError(f"run {run} has no trained network to evaluate")
    if d.main:
        write_json(out / "evaluation.json", res)
    return res


# what `evaluate` scores: f_theta, its controls where the run trained them (so that a changed stop threshold or
# TTA is compared like with like), g_phi
EVALUATED = ("annotator", "annotator_long", "annotator_long_aug", "segmenter")


def open_net(path: Path, val: SegDataset, root: Path, tta, stop: float | None, stops: bool) -> tuple:
    """(network, task) of model file `path` to score on `val` (read from `root`), its stop threshold replaced by `stop`;
    one-line errors for test-time augmentation (tta: (on, scales)) or stop thresholds (stops: several asked for) it
    cannot take, and for classes other than val's."""
    state, meta = load_model_file(path)
    meta = meta or meta_from_run(path)
    check_meta(path, meta)
    check_tta(path, meta, *tta)
    if stops:
        check_stop_test(path, meta, "--stop-thresholds")
    meta = with_stop_threshold(path, meta, stop)
    if list(meta["class_names"]) != list(val.class_names):
        raise input_error(root, f"classes {val.class_names} differ from the run's {meta['class_names']}")
    return build_from_meta(path, state, meta)
