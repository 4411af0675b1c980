"""run(config): strong/unlabeled split -> f_theta -> pseudo-labels -> g_phi -> evaluation, in one run folder.

Run folder:
  config.yaml           the resolved configuration
  split/                strong.txt, unlabeled.txt
  cost.json             what the strong labels cost (seconds, hours, days) and the statistics used
  annotator/            f_theta: last.pt (per-epoch checkpoint), model.pt, train.json, eval.json
  pseudo/               pseudo-labels of the unlabeled images (semantic/pseudo.py, instance/pseudo.py)
  segmenter/            g_phi: as annotator/
  annotator_long/       with `controls`: f_theta trained as long as g_phi in all (the control for g_phi's gain)
  annotator_long_aug/   with `controls_augmented` too: the same with colour jitter, cutout and CutMix
  results.json          the figures of the run
  log.txt
Each stage is skipped when its output exists, so running again with resume=True finishes an interrupted run.
"""

from __future__ import annotations

import dataclasses
import shutil
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import torch

from budgetseg.config import RunConfig, TrainConfig, control_configs, for_n
from budgetseg.cost import LEVEL_NAMES
from budgetseg.data.pool import Pool, as_trained
from budgetseg.data.sample import SegDataset, first_class
from budgetseg.dist import Dist, barrier, gather_objects, init_distributed
from budgetseg.engine.batches import TrainSet
from budgetseg.errors import BudgetsegError
from budgetseg.io import folder_lock, remove_stale_temp_files, write_json
from budgetseg.plan import check_inputs, open_pool_and_val, prepare, weak_level
from budgetseg.runlog import Logger
from budgetseg.splits import Split
from budgetseg.stages import annotator_stage, evaluate_stage, figure, pseudo_stage, stage_seconds, train_stage
from budgetseg.task import PLAIN, InferOptions, Task
from budgetseg.tasks import make_task
from budgetseg.weak import WeakLabels, check_covers, check_known, read_weak_labels
from budgetseg.weak import from_dataset as weak_from_dataset

STAGES = ("annotator", "pseudo", "segmenter", "evaluate")


@dataclass(frozen=True)
class Inputs:
    """What a run reads, opened (and checked to open) before anything is written: the pool and val with their
    ids, g_phi's task and f_theta's (W-RSIS, or as g_phi), the data.weak_labels file's labels."""

    pool: Pool
    pool_ids: list[str]
    val: SegDataset | None
    val_ids: list[str]
    task: Task
    ann_task: Task
    weak_file: WeakLabels | None


@dataclass(frozen=True)
class Stages:
    """What every stage of a prepared run shares: its config (resolved for its N), folder, split and cost, how it
    runs (resume, ranks, log, the annotator cache) and the strong images as f_theta trains on them."""

    cfg: RunConfig
    out: Path
    inputs: Inputs
    split: Split
    cost: dict
    resume: bool
    d: Dist
    log: Logger
    cache_dir: str | Path | None
    strong: TrainSet

    def annotator(self, name: str, train_cfg: TrainConfig) -> torch.nn.Module:
        """f_theta (or a control of it) into out/<name>/, through the annotator cache (annotator_stage)."""
        kw = dict(task=self.inputs.ann_task, rc=self.cfg, out=self.out, strong=self.strong, resume=self.resume)
        kw |= dict(d=self.d, log=self.log, cache_dir=self.cache_dir, boxes=self.split.boxes)
        return annotator_stage(name, train_cfg, **kw)


def open_inputs(cfg: RunConfig) -> Inputs:
    """The run's data and tasks: bad data paths, a bad encoder name or weights file fail before anything is
    written."""
    pool, pool_ids, val, val_ids = open_pool_and_val(cfg)
    labels = dict(background=pool.background, category_ids=pool.category_ids)  # what the model files carry
    task = make_task(cfg.task, pool.class_names, cfg.model, **labels)  # g_phi's
    ann_task = make_task(cfg.task, pool.class_names, cfg.model, annotator=True, **labels)
    ann_task.build_model(cfg.model)
    weak_file = None
    if cfg.data.weak_labels:
        weak_file = read_weak_labels(cfg.data.weak_labels, pool.class_names, first_class(pool))
    return Inputs(pool, pool_ids, val, val_ids, task, ann_task, weak_file)


def take_folder(stack: ExitStack, out: Path, d: Dist) -> None:
    """Rank 0 takes the run folder's lock (released when `stack` closes); every rank learns whether it did."""
    held = None
    if d.main:
        try:
            stack.enter_context(folder_lock(out))
            held = True
        except BudgetsegError as e:
            held = str(e)
    held = gather_objects(d, held)[0]
    if held is not True:
        raise BudgetsegError(held)


def prepare_checked(
    cfg: RunConfig, out: Path, inputs: Inputs, fresh: bool, started: bool, resume: bool, d: Dist, log: Logger
) -> tuple[Split, dict]:
    """prepare, after every input file is decoded (a fresh run), and the unlabeled images' weak labels checked
    where the run needs them; a failure leaves no half-prepared run folder behind."""
    pool = inputs.pool
    try:
        if not started:  # a bad file stops the run now, not after f_theta has trained
            check_inputs(pool, inputs.pool_ids, inputs.val, inputs.val_ids, d, inputs.task.max_objects)
        if inputs.weak_file is not None:
            everything = [*pool.ids, *(inputs.val.ids if inputs.val is not None else [])]
            check_known(inputs.weak_file, everything, cfg.data.weak_labels)
        split, cost = prepare(cfg, out, pool, inputs.pool_ids, started, resume, d, log, inputs.weak_file)
        if inputs.weak_file is not None:  # tags may cover some images (plan.prepare); W-RSIS labels every one
            if weak_level(cfg) == "ilc":
                check_covers(inputs.weak_file, split.unlabeled, cfg.data.weak_labels)
        elif weak_level(cfg) != "none" and not all(pool.has_labels(i) for i in split.unlabeled):
            who = "W-RSIS" if inputs.ann_task.class_inputs else "pseudo.image_labels"
            what = LEVEL_NAMES[weak_level(cfg)]
            raise BudgetsegError(f"{who} needs the {what} labels of the unlabeled images: set data.weak_labels")
    except BaseException:
        if fresh and d.main:
            shutil.rmtree(out, ignore_errors=True)
        raise
    return split, cost


def recipe_for_n(cfg: RunConfig, n: int, log: Logger) -> RunConfig:
    """color_aug_max_n: the recipe for this N (the saved config keeps the option, so another N resolves anew)."""
    for net in ("annotator", "segmenter"):
        t = getattr(cfg, net)
        if t.color_aug_max_n is not None:
            cfg = dataclasses.replace(cfg, **{net: for_n(t, n)})
            on = "on" if getattr(cfg, net).color_aug else "off"
            log(f"{net}: colour jitter + cutout {on} (N={n}, color_aug_max_n={t.color_aug_max_n})")
    return cfg


def budget_results(cfg: RunConfig, split: Split, cost: dict) -> dict:
    """The head of results.json: the task, N, M and what the labels cost."""
    spent = cost.get("total", cost["strong_labels"])  # run folders prepared before W-RSIS have no total
    return {
        "task": cfg.task,
        "n_strong": len(split.strong),
        "n_pseudo": len(split.unlabeled),
        "n_weak": cost.get("n_weak", 0),
        "budget_seconds": spent["seconds"],
        "budget_hours": spent["hours"],
        "budget_days": spent["days"],
    }


def segmenter_rounds(s: Stages, f_theta: torch.nn.Module, until: str) -> tuple | None:
    """Pseudo-labels for the M unlabeled images, then g_phi on strong + pseudo; with pseudo.rounds R > 1 the
    last g_phi relabels the pool and a new g_phi trains on that, R times in all (ST++). The last round's
    pseudo-labels and g_phi are pseudo/ and segmenter/; earlier rounds' pseudo_r<k>/ and segmenter_r<k>/.
    Returns (the last g_phi, its pseudo-labels' summary, [(name, g_phi, summary) of earlier rounds]), or None when
    the run stops after the first pseudo-labels (until pseudo)."""
    cfg, inputs, split, task = s.cfg, s.inputs, s.split, s.inputs.task
    labels = None
    if weak_level(cfg) != "none":  # IL+C for W-RSIS, IL for pseudo.image_labels
        labels = inputs.weak_file if inputs.weak_file is not None else weak_from_dataset(inputs.pool, split.unlabeled)
    elif split.tags:  # the simulation's tagged images (data.labels.tags); the others' pseudo-labels are not restricted
        labels = weak_from_dataset(inputs.pool, split.tags)
    teacher, teacher_task, amp = f_theta, inputs.ann_task, cfg.annotator.amp
    init = s.out / "annotator" / "model.pt" if cfg.segmenter.init == "annotator" else None
    g_phi, pseudo_summary, earlier = None, None, []
    for r in range(1, cfg.pseudo.rounds + 1):
        sfx = "" if r == cfg.pseudo.rounds else f"_r{r}"
        pdir = s.out / f"pseudo{sfx}"
        # the unlabeled images' weak labels: W-RSIS reads their IL+C, and with pseudo.image_labels each
        # image's labels hold only its own classes (the networks are evaluated on val without them)
        args = (teacher, teacher_task, task, inputs.pool, split.unlabeled, pdir, cfg, amp, s.d, s.log)
        pseudo_summary = pseudo_stage(*args, weak=labels, strong=s.strong)
        if until == "pseudo":
            return None
        pseudo = TrainSet(inputs.pool, split.unlabeled, task, task.pseudo_labels(pdir))
        args = (cfg.segmenter, [s.strong, pseudo], task, cfg, s.out, s.resume, s.d, s.log, init)
        g_phi = train_stage(f"segmenter{sfx}", *args)
        if sfx:
            earlier.append((f"segmenter{sfx}", g_phi, pseudo_summary))
        teacher, teacher_task, amp = g_phi, task, cfg.segmenter.amp
        init = s.out / f"segmenter{sfx}" / "model.pt" if cfg.segmenter.init == "annotator" else None
    return g_phi, pseudo_summary, earlier


def control_stages(s: Stages) -> tuple[torch.nn.Module | None, torch.nn.Module | None]:
    """The controls g_phi's gain must beat: f_theta trained as long as g_phi (controls) and, with g_phi's
    augmentation, which alone may explain its lead (controls_augmented); None where not asked for."""
    nets = control_configs(s.cfg)
    f_long, f_long_aug = (
        s.annotator(k, nets[k]) if k in nets else None for k in ("annotator_long", "annotator_long_aug")
    )
    if s.cfg.controls_augmented and f_long_aug is None:  # f_theta is augmented already: one network, once
        s.log(
            "annotator_long_aug: f_theta already trains with colour jitter, cutout and CutMix, so the "
            "augmented control is annotator_long"
        )
        f_long_aug = f_long
    return f_long, f_long_aug


def write_results(s: Stages, results: dict) -> dict:
    """results.json with the stages' wall times (rank 0)."""
    results["wall_seconds"] = stage_seconds(s.out)
    if s.d.main:
        write_json(s.out / "results.json", results)
    return results


def evaluation(s: Stages, results: dict, f_theta, controls: tuple, rounds: tuple) -> dict:
    """Every network of the run scored on val into results.json; returns it."""
    inputs, task, (f_long, f_long_aug), (g_phi, _, earlier) = s.inputs, s.inputs.task, controls, rounds
    val, val_ids, ann_task = inputs.val, inputs.val_ids, inputs.ann_task
    ann_opts = PLAIN
    if ann_task.class_inputs:  # W-RSIS on val is given the IL+C labels an annotator would give (from the masks)
        ann_opts = InferOptions(weak=weak_from_dataset(val, val_ids))
    args = (ann_task, val, val_ids, s.cfg, s.out, s.d, s.log, ann_opts)
    results["annotation_net"] = evaluate_stage("annotator", f_theta, *args)
    if f_long is not None:
        results["annotation_net_long"] = evaluate_stage("annotator_long", f_long, *args)
    if f_long_aug is not None:  # the plain control itself where f_theta is augmented already: scored once
        results["annotation_net_long_aug"] = (
            results["annotation_net_long"]
            if f_long_aug is f_long
            else evaluate_stage("annotator_long_aug", f_long_aug, *args)
        )
    seg_args = (task, val, val_ids, s.cfg, s.out, s.d, s.log)
    results["segmentation_net"] = evaluate_stage("segmenter", g_phi, *seg_args) if g_phi is not None else None
    if earlier:  # ST++ rounds before the last: their pseudo-label quality and g_phi
        results["earlier_rounds"] = [
            {"pseudo_labels": ps, "segmentation_net": evaluate_stage(n, m, *seg_args)} for n, m, ps in earlier
        ]
    write_results(s, results)
    barrier(s.d)
    seg = results["segmentation_net"]
    s.log(
        f"done: f_theta {task.metric_label} {figure(results['annotation_net'][task.metric])}"
        + (f", g_phi {task.metric_label} {figure(seg[task.metric])}" if seg else "")
        + f" -> {s.out / 'results.json'}"
    )
    return results


def run(
    cfg: RunConfig,
    out: str | Path,
    resume: bool = False,
    cache_dir: str | Path | None = None,
    until: str = "evaluate",
) -> dict:
    """The pipeline into run folder `out`, up to and including stage `until` (one of STAGES); finished stages
    are skipped. Returns the results.json object (empty before the evaluate stage)."""
    if until not in STAGES:
        raise BudgetsegError(f"unknown stage {until!r} (stages: {', '.join(STAGES)})")
    out = Path(out)
    d = init_distributed()
    torch.set_flush_denormal(True)
    inputs = open_inputs(cfg)
    fresh, started = not out.exists(), (out / "config.yaml").is_file()
    barrier(d)  # every rank has looked before rank 0 writes
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
    barrier(d)
    with ExitStack() as stack:
        take_folder(stack, out, d)
        log = Logger(out / "log.txt", d.main)
        if not fresh and d.main:  # the lock is ours: no one else is writing them
            removed = remove_stale_temp_files(out)
            if removed:
                log(f"removed {removed} temp file(s) that an interrupted run left")
        split, cost = prepare_checked(cfg, out, inputs, fresh, started, resume, d, log)
        cfg = recipe_for_n(cfg, len(split.strong), log)
        mix = cfg.data.labels
        labelled = as_trained(inputs.pool, split.boxes, mix.box_classes, mix.box_masks, out / "box_masks")
        strong = TrainSet(labelled, split.strong, inputs.task)
        s = Stages(cfg, out, inputs, split, cost, resume, d, log, cache_dir, strong)
        # 1. f_theta on the N strong images (shared through cache_dir by runs that agree on everything it needs)
        f_theta = s.annotator("annotator", cfg.annotator)
        if until == "annotator":
            return {}
        results = budget_results(cfg, split, cost)
        # 2. pseudo-labels and g_phi, then the controls
        rounds = segmenter_rounds(s, f_theta, until) if split.unlabeled else (None, None, [])
        if rounds is None:
            return {}
        controls = control_stages(s)
        if until in ("pseudo", "segmenter"):
            return {}
        # 3. evaluation of every network on val
        results["pseudo_labels"] = rounds[1]
        if inputs.val is None:
            results |= {"annotation_net": None, "segmentation_net": None}
            write_results(s, results)
            log(f"done (data.val_split is null: not evaluated; `budgetseg evaluate {out} --val-root R` scores it)")
            return results
        return evaluation(s, results, f_theta, controls, rounds)
