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
import hashlib
import json
import shutil
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from budgetseg import modelfile
from budgetseg.config import (
    NEUTRAL_KEYS,
    CostConfig,
    RunConfig,
    TrainConfig,
    for_n,
    g_phi_iterations,
    save_config,
    saved_config_diff,
)
from budgetseg.cost import (
    LEVEL_NAMES,
    CostModel,
    describe_seconds,
    max_strong_at,
    parse_budget,
    plan_cost,
    weak_seconds,
)
from budgetseg.data.pool import ImageFolder, Pool
from budgetseg.data.readers import open_split
from budgetseg.data.sample import SegDataset, encode_label_png, first_class
from budgetseg.data.stats import DatasetStats, cost_statistics, dataset_stats
from budgetseg.data.transforms import resolution
from budgetseg.dist import Dist, barrier, gather_objects, init_distributed, loader_workers
from budgetseg.engine.batches import TrainSet
from budgetseg.engine.infer import predict
from budgetseg.engine.train import train
from budgetseg.errors import BudgetsegError, input_error
from budgetseg.io import atomic_copy, atomic_write, folder_lock, remove_stale_temp_files, write_json
from budgetseg.models.encoders import encoder_mean_std
from budgetseg.pseudo import predict_pool
from budgetseg.semantic.metrics import confusions_text, top_confusions
from budgetseg.splits import Split, make_split, read_ids, read_split, write_split
from budgetseg.task import PLAIN, InferOptions, Task
from budgetseg.tasks import make_task, task_class
from budgetseg.trainlog import add_val
from budgetseg.weak import WeakLabels, check_covers, read_weak_labels
from budgetseg.weak import from_dataset as weak_from_dataset

PREVIEW_IMAGES = 6  # val images whose predictions each run keeps (in <net>/preview/) for picture grids


class Logger:
    """Prints to stderr (stdout is for results: --json) and appends to the run's log.txt (rank 0 only)."""

    def __init__(self, path: Path, main: bool):
        self.path, self.main = path, main

    def __call__(self, msg: str) -> None:
        if self.main:
            line = f"[{time.strftime('%H:%M:%S')}] {msg}"
            print(line, file=sys.stderr, flush=True)
            with open(self.path, "a") as f:
                f.write(line + "\n")


def open_pool_and_val(cfg: RunConfig) -> tuple[Pool, list[str], SegDataset | None, list[str]]:
    """The pool (the train split, plus data.unlabeled's images, plus, for data.strong auto on COCO, the images
    beside the JSON that it does not list) and val (None when data.val_split is null), with their ids."""
    base = open_split(cfg.data, cfg.data.train_split)
    folders = []
    if cfg.data.strong == "auto" and cfg.data.format == "coco" and base.ids:
        listed = {base.image_path(i).resolve() for i in base.ids}
        folders.append(ImageFolder(base.image_path(base.ids[0]).parent, base.class_names, skip=listed))
    if cfg.data.unlabeled:
        folders.append(ImageFolder(cfg.data.unlabeled, base.class_names))
    pool = Pool(base, folders)
    if cfg.data.val_split is None:
        return pool, list(pool.ids)[: cfg.data.limit_pool], None, []
    val = open_split(cfg.data, cfg.data.val_split)
    return pool, list(pool.ids)[: cfg.data.limit_pool], val, list(val.ids)[: cfg.data.limit_val]


def weak_level(cfg: RunConfig) -> str:
    """Label level the unlabeled images are bought at: IL+C for a W-RSIS annotator, IL for pseudo-labels
    restricted to each image's classes (pseudo.image_labels), none otherwise."""
    if cfg.model.class_inputs:
        return "ilc"
    return "il" if cfg.pseudo.image_labels else "none"


def check_inputs(pool: Pool, pool_ids: list[str], val: SegDataset | None, val_ids: list[str], d: Dist) -> None:
    """Decode every image and label file the run will read (this rank's share; labels where the pool has them,
    all of val's). The progress bar's line is cleared before an error is raised, so the error has its own line."""
    items = [(pool, i) for i in pool_ids] + [(val, i) for i in val_ids]
    error = None
    with tqdm(items[d.rank :: d.world], desc="checking input files", leave=False, disable=not d.main) as bar:
        for ds, i in bar:
            try:
                ds.load(i)
            except BudgetsegError as e:
                error = str(e)
                break
    errors = [e for e in gather_objects(d, error) if e]
    if errors:
        raise BudgetsegError(errors[0])


def given_strong(cfg: RunConfig, pool: Pool, pool_ids: list[str]) -> list[str]:
    """The strong ids of data.strong auto (the pool images with labels) or of an ids file (checked)."""
    if cfg.data.strong == "auto":
        strong = [i for i in pool_ids if pool.has_labels(i)]
        if not strong:
            raise BudgetsegError(f"{cfg.data.root}: data.strong auto, but no pool image has label files")
        return strong
    path = Path(cfg.data.strong)
    strong, known = read_ids(path), set(pool_ids)
    unknown = [i for i in strong if i not in known]
    if unknown:
        raise input_error(path, f"{len(unknown)} id(s) are not in the pool, e.g. {unknown[0]!r}")
    missing = [i for i in strong if not pool.has_labels(i)]
    if missing:
        raise input_error(path, f"{len(missing)} listed image(s) have no label files, e.g. {missing[0]!r}")
    return strong


def check_has_objects(task: type[Task], measured: DatasetStats, where: str) -> None:
    """Refuse labels with nothing to learn: no foreground pixel or, for a task that trains on objects (instance;
    crowd regions are ignored, not objects), no object in any of the measured images."""
    if task.trains_on_objects and measured.objects_per_image == 0:
        raise BudgetsegError(
            f"{where}: the {measured.images} labelled images hold no object instance (every annotation is crowd, or "
            "there is none): nothing to train on"
        )
    if measured.classes_per_image == 0:
        raise BudgetsegError(
            f"{where}: the {measured.images} labelled images hold no object pixel: nothing to train on"
        )


def cost_of(c: CostConfig, measured: DatasetStats, measured_on: str) -> tuple[dict[str, float], dict]:
    """Seconds per image at each level and what they rest on (statistics, their source, action times)."""
    model = CostModel(c.verify_s, c.count_s, c.box_s, c.mask_s, c.assisted_mask_s, c.dense_s)
    stats, about = cost_statistics(
        measured,
        measured_on,
        c.preset,
        classes=c.classes,
        classes_per_image=c.classes_per_image,
        objects_per_image=c.objects_per_image,
    )
    return model.seconds_per_image(stats), {"statistics": asdict(stats), **about, "action_seconds": asdict(model)}


def prepare(
    cfg: RunConfig, out: Path, pool: Pool, pool_ids: list[str], started: bool, resume: bool, d: Dist, log: Logger
) -> tuple[Split, dict]:
    """Write config.yaml, split/ and cost.json, or check them when an earlier start of this run (`started`,
    decided before any rank writes) left them."""
    if started:
        if not resume:
            raise BudgetsegError(f"{out}: run folder exists; pass --resume to continue it or choose another folder")
        keys = saved_config_diff(out / "config.yaml", cfg)
        if keys:
            raise BudgetsegError(
                f"{out}/config.yaml: differs from this run's configuration in {', '.join(keys)}; use another folder"
            )
        return read_split(out / "split"), json.loads((out / "cost.json").read_text())
    level = weak_level(cfg)
    if cfg.data.strong == "random":  # the simulation: the expected cost of N images drawn from the pool
        measured = dataset_stats(pool)
        check_has_objects(task_class(cfg.task), measured, f"{cfg.data.root} ({cfg.data.train_split})")
        spi, about = cost_of(cfg.cost, measured, f"the {cfg.data.train_split} pool")
        weak_s = weak_seconds(spi, level)
        n = cfg.n_strong
        if n is None:
            n = max_strong_at(parse_budget(cfg.budget, cfg.hours_per_day), len(pool_ids), spi, level)
            if n is None:
                days = describe_seconds(len(pool_ids) * weak_s, cfg.hours_per_day)["days"]
                raise BudgetsegError(
                    f"budget {cfg.budget} does not pay for the {LEVEL_NAMES[level]} labels of the {len(pool_ids)} "
                    f"pool images ({days:.3f} d) that the run needs"
                )
        if not n:
            raise BudgetsegError(f"N=0 strong images (budget {cfg.budget}); the annotation network needs at least one")
        split = make_split(pool_ids, n, cfg.seed)
        bare = [i for i in split.strong if not pool.has_labels(i)]
        if bare:
            raise BudgetsegError(
                f"data.strong random drew {len(bare)} image(s) without label files (e.g. {bare[0]!r}); for a partly "
                "labelled pool use data.strong: auto or a file of ids"
            )
    else:  # what was paid for: the labels of these strong images
        strong = given_strong(cfg, pool, pool_ids)
        measured = dataset_stats(pool, strong)
        where = cfg.data.strong if cfg.data.strong != "auto" else cfg.data.root
        check_has_objects(task_class(cfg.task), measured, where)
        spi, about = cost_of(cfg.cost, measured, f"the {len(strong)} strong images' labels")
        weak_s = weak_seconds(spi, level)
        chosen = set(strong)
        split = Split(sorted(strong), sorted(i for i in pool_ids if i not in chosen))
        n = len(strong)
        if cfg.n_strong not in (None, n):
            log(f"data.strong {cfg.data.strong}: N={n} strong images (n_strong={cfg.n_strong} does not apply)")
    weak_total = len(split.unlabeled) * weak_s
    cost = {
        "n_strong": n,
        "n_weak": len(split.unlabeled) if weak_s else 0,
        "strong_from": cfg.data.strong,
        "seconds_per_image": spi,
        **about,
        "strong_labels": describe_seconds(n * spi["full"], cfg.hours_per_day),
        "weak_labels": describe_seconds(weak_total, cfg.hours_per_day),
        "total": describe_seconds(plan_cost(n, len(split.unlabeled), spi, level), cfg.hours_per_day),
    }
    if d.main:
        write_split(out / "split", split)
        write_json(out / "cost.json", cost)
        save_config(out / "config.yaml", cfg)  # last: its presence marks a prepared run folder
    barrier(d)
    weak = f" + {LEVEL_NAMES[level]} for them {cost['weak_labels']['hours']:.2f} h" if weak_s else ""
    est = " (objects per image estimated from the masks)" if about["objects_estimated"] else ""
    if about["statistics"]["dense"]:
        est = f" (a label set without background: {spi['full']:g} s an image, cost.dense_s)"
    log(
        f"N={n} strong images cost {cost['strong_labels']['hours']:.2f} h ({cost['strong_labels']['days']:.3f} d)"
        f"{est}; {len(split.unlabeled)} unlabeled{weak}"
    )
    return split, cost


def save_model(path: Path, model: torch.nn.Module, name: str, task: Task, rc: RunConfig) -> None:
    """model.pt of network `name` (annotator / segmenter) with what it needs to run on its own (modelfile.py)."""
    role = modelfile.net_role(name)
    meta = modelfile.model_meta(rc.task, role, task.class_names, rc.model, rc.data, task.background)
    modelfile.save_model(path, model, meta)


SEGMENTER_ONLY = (
    "init",
    "strong_fraction",
    "pseudo_weight",
    "pseudo_color_aug",
    "pseudo_cutmix",
    "consistency",
    "consistency_threshold",
)


def annotator_key(cfg: RunConfig, strong: list[str]) -> str:
    """Everything f_theta depends on; runs that agree on it can share one trained annotator."""
    data, train = asdict(cfg.data), asdict(cfg.annotator)
    for key in NEUTRAL_KEYS:  # speed only
        section, name = key.split(".")
        {"data": data, "annotator": train}.get(section, {}).pop(name, None)
    for k in SEGMENTER_ONLY:  # options f_theta ignores: a recipe differing only in them shares its f_theta
        train.pop(k)
    for k in ("color_aug", "cutmix", "color_aug_max_n"):  # newer keys, off: an f_theta trained before them
        if not train[k]:
            train.pop(k)
    blob = json.dumps([data, asdict(cfg.model), train, cfg.seed, cfg.task, strong])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def train_stage(
    name: str,
    cfg: TrainConfig,
    sets: list[TrainSet],
    task: Task,
    rc: RunConfig,
    out: Path,
    resume: bool,
    d: Dist,
    log: Logger,
    init_from: Path | None = None,
) -> torch.nn.Module:
    """Train one network into out/<name>/ (model.pt, train.json) unless it is there already."""
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(rc.seed)  # the decoder's initial weights
    model, weights_log = task.build_model(rc.model)
    if (folder / "model.pt").is_file():
        model.load_state_dict(modelfile.load_model_file(folder / "model.pt")[0])
        log(f"{name}: trained model found, skipping training")
        # the layout train() leaves a network in: it picks the kernels, so outputs match the trained one's bit for bit
        return model.to(d.device).to(memory_format=torch.channels_last)
    log(f"{name}: {weights_log}")
    if init_from is not None:
        state, own = modelfile.load_model_file(init_from)[0], model.state_dict()
        state = task.adapt_state(model, state)  # e.g. W-RSIS -> RSIS
        same = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        model.load_state_dict(same, strict=False)
        left = f" ({len(own) - len(same)} tensors of other shapes left as built)" if len(same) < len(own) else ""
        log(f"{name}: initialised from {init_from}{left}")
    mean, std = encoder_mean_std(rc.model.encoder)
    sizes = " + ".join(f"{len(s)} {'pseudo-labelled' if s.pseudo else 'strong'}" for s in sets)
    log(f"{name}: training on {sizes} images for {cfg.iterations} iterations (batch {cfg.batch_size})")
    timing = train(
        model,
        sets,
        task,
        cfg,
        folder,
        size=resolution(rc.data),
        mean=mean,
        std=std,
        seed=rc.seed,
        resume=resume,
        d=d,
        workers=loader_workers(rc.data.num_workers, d),
        desc=name,
        log=log,
    )
    if d.main:
        write_json(folder / "train.json", timing)
        save_model(folder / "model.pt", model, name, task, rc)  # last: a model.pt marks a finished stage
    barrier(d)
    log(f"{name}: trained in {timing['seconds']:.0f} s ({timing['images_per_second']} img/s)")
    return model


def pseudo_stage(
    teacher: torch.nn.Module,
    teacher_task: Task,
    task: Task,
    pool: Pool,
    ids: list[str],
    pdir: Path,
    rc: RunConfig,
    amp: bool,
    d: Dist,
    log: Logger,
    weak: WeakLabels | None = None,
) -> dict:
    """Pseudo-labels of `ids` by `teacher` (given the images' weak labels `weak`) into `pdir` (the task's
    pseudo-label folder: semantic/pseudo.py, instance/pseudo.py) unless its summary.json is there; returns the
    summary."""
    if not (pdir / "summary.json").is_file():
        mean, std = encoder_mean_std(rc.model.encoder)
        t0 = time.perf_counter()
        kw = dict(
            size=resolution(rc.data), mean=mean, std=std, d=d, amp=amp, workers=loader_workers(rc.data.num_workers, d)
        )
        predict_pool(teacher, teacher_task, pool, ids, pdir, rc.pseudo, weak=weak, **kw)
        summary = task.pseudo_labels(pdir).finalize(pool, ids, rc.pseudo, d)  # split across ranks
        if d.main:
            write_json(pdir / "summary.json", summary | {"seconds": round(time.perf_counter() - t0, 2)})
        barrier(d)
    summary = json.loads((pdir / "summary.json").read_text())
    quality = summary.get(task.metric)
    against = (
        f"{task.metric_label} {quality:.4f} on the {summary['scored_images']} with ground truth"
        if quality is not None
        else "no ground truth to score them"
    )
    confused = ""
    if summary.get("confusion") is not None:  # the semantic task's; what a user should look at first
        pairs = top_confusions(summary["confusion"], list(summary["per_class_iou"]), k=2)
        confused = f"; most confused: {confusions_text(pairs)}"
    paired = ""
    if summary.get("paired_fraction") is not None:
        hit = summary.get("pair_accuracy")
        right = f" ({100 * hit:.1f}% of them hold the true class)" if hit is not None else ""
        paired = f", {100 * summary['paired_fraction']:.1f}% paired{right}"
    log(f"{pdir.name}: {against}, {100 * (summary['kept_fraction'] or 0):.1f}% kept{paired}{confused}")
    return summary


def annotator_stage(
    name: str,
    train_cfg: TrainConfig,
    *,
    task: Task,
    rc: RunConfig,
    out: Path,
    strong: TrainSet,
    resume: bool,
    d: Dist,
    log: Logger,
    cache_dir: str | Path | None,
) -> torch.nn.Module:
    """f_theta (or its longer control) trained on the strong images into out/<name>/, taken from or put into
    the cache (cache_dir/<annotator_key>/) that runs agreeing on everything it depends on share."""
    key_cfg = dataclasses.replace(rc, annotator=train_cfg)
    cached = Path(cache_dir) / annotator_key(key_cfg, strong.ids) / "model.pt" if cache_dir else None
    folder = out / name
    if cached is not None and cached.is_file() and not (folder / "model.pt").is_file() and d.main:
        folder.mkdir(exist_ok=True)
        atomic_copy(cached.with_name("train.json"), folder / "train.json")
        atomic_copy(cached, folder / "model.pt")  # last, as in train_stage
        log(f"{name}: reusing {cached}")
    barrier(d)
    model = train_stage(name, train_cfg, [strong], task, rc, out, resume, d, log)
    if cached is not None and not cached.is_file() and d.main:
        cached.parent.mkdir(parents=True, exist_ok=True)
        atomic_copy(folder / "train.json", cached.with_name("train.json"))
        atomic_copy(folder / "model.pt", cached)  # last: a cache entry is whole or absent
    return model


def figure(x: float | None) -> str:
    """A metric for the log: 4 decimals, or 'undefined' (None: e.g. AP without ground-truth instances)."""
    return "undefined" if x is None else f"{x:.4f}"


def evaluate_stage(
    name: str,
    model,
    task: Task,
    val: SegDataset,
    val_ids: list[str],
    rc: RunConfig,
    out: Path,
    d: Dist,
    log: Logger,
    options: InferOptions = PLAIN,
) -> dict:
    """Score network `name` on val_ids into out/<name>/eval.json (read back if there); options: how it predicts
    (test-time augmentation, W-RSIS's IL+C labels of the val images: task.InferOptions)."""
    path = out / name / "eval.json"
    if path.is_file():
        return json.loads(path.read_text())
    t0 = time.perf_counter()
    mean, std = encoder_mean_std(rc.model.encoder)
    ev = task.evaluator()
    preview = set(val_ids[:PREVIEW_IMAGES])
    kw = dict(size=resolution(rc.data), mean=mean, std=std, d=d, workers=loader_workers(rc.data.num_workers, d))
    amp = (rc.segmenter if name.startswith("segmenter") else rc.annotator).amp  # the network's own precision
    stream = predict(model, val, val_ids, task, progress=f"evaluating {name}", amp=amp, options=options, **kw)
    for sample, pred in stream:
        shown = task.score(ev, sample, pred)
        if sample.id in preview:  # a few predictions kept for the report's picture grid
            atomic_write(out / name / "preview" / f"{sample.id}.png", lambda f, a=shown: encode_label_png(a, f))
    res = ev.evaluate() | {"seconds": round(time.perf_counter() - t0, 2), "images": len(val_ids)}
    if d.main:
        write_json(path, res)
        add_val(out / name / "metrics.csv", task.metric, res[task.metric])
    log(f"{name}: val {task.metric_label} {figure(res[task.metric])}" + (f" ({res['note']})" if "note" in res else ""))
    return res


STAGES = ("annotator", "pseudo", "segmenter", "evaluate")


def stage_seconds(out: Path) -> dict[str, float]:
    """Wall time of each stage, as recorded when the stage did its work (resumed sessions included)."""
    files = {
        "train_annotator": out / "annotator" / "train.json",
        "pseudo_label": out / "pseudo" / "summary.json",
        "train_segmenter": out / "segmenter" / "train.json",
        "evaluate_annotator": out / "annotator" / "eval.json",
        "evaluate_segmenter": out / "segmenter" / "eval.json",
        "train_annotator_long": out / "annotator_long" / "train.json",
        "evaluate_annotator_long": out / "annotator_long" / "eval.json",
        "train_annotator_long_aug": out / "annotator_long_aug" / "train.json",
        "evaluate_annotator_long_aug": out / "annotator_long_aug" / "eval.json",
    }
    return {k: json.loads(f.read_text())["seconds"] for k, f in files.items() if f.is_file()}


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
    pool, pool_ids, val, val_ids = open_pool_and_val(cfg)  # bad data paths fail before anything is written
    task = make_task(cfg.task, pool.class_names, cfg.model, background=pool.background)  # g_phi's
    # f_theta's (W-RSIS or as g_phi)
    ann_task = make_task(cfg.task, pool.class_names, cfg.model, annotator=True, background=pool.background)
    ann_task.build_model(cfg.model)  # so do a bad encoder name or weights file
    weak_file = None
    if cfg.data.weak_labels:
        weak_file = read_weak_labels(cfg.data.weak_labels, pool.class_names, first_class(pool))
    fresh, started = not out.exists(), (out / "config.yaml").is_file()
    barrier(d)  # every rank has looked before rank 0 writes
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
    barrier(d)
    held = None  # rank 0 takes the folder's lock; every rank learns whether it did
    with ExitStack() as stack:
        if d.main:
            try:
                stack.enter_context(folder_lock(out))
                held = True
            except BudgetsegError as e:
                held = str(e)
        held = gather_objects(d, held)[0]
        if held is not True:
            raise BudgetsegError(held)
        log = Logger(out / "log.txt", d.main)
        if not fresh and d.main:  # the lock is ours: no one else is writing them
            removed = remove_stale_temp_files(out)
            if removed:
                log(f"removed {removed} temp file(s) that an interrupted run left")
        try:
            if not started:  # a bad file stops the run now, not after f_theta has trained
                check_inputs(pool, pool_ids, val, val_ids, d)
            split, cost = prepare(cfg, out, pool, pool_ids, started, resume, d, log)
            if weak_file is not None:
                check_covers(weak_file, split.unlabeled, cfg.data.weak_labels)
            elif weak_level(cfg) != "none" and not all(pool.has_labels(i) for i in split.unlabeled):
                who = "W-RSIS" if ann_task.class_inputs else "pseudo.image_labels"
                what = LEVEL_NAMES[weak_level(cfg)]
                raise BudgetsegError(f"{who} needs the {what} labels of the unlabeled images: set data.weak_labels")
        except BaseException:
            if fresh and d.main:  # leave no half-prepared run folder behind
                shutil.rmtree(out, ignore_errors=True)
            raise

        # color_aug_max_n: the recipe for this N (the saved config keeps the option, so another N resolves anew)
        for net in ("annotator", "segmenter"):
            t = getattr(cfg, net)
            if t.color_aug_max_n is not None:
                cfg = dataclasses.replace(cfg, **{net: for_n(t, len(split.strong))})
                on = "on" if getattr(cfg, net).color_aug else "off"
                log(f"{net}: colour jitter + cutout {on} (N={len(split.strong)}, color_aug_max_n={t.color_aug_max_n})")

        # 1. f_theta on the N strong images (shared through cache_dir by runs that agree on everything it needs)
        strong = TrainSet(pool, split.strong, task)
        ann_kw = dict(task=ann_task, rc=cfg, out=out, strong=strong, resume=resume, d=d, log=log, cache_dir=cache_dir)
        f_theta = annotator_stage("annotator", cfg.annotator, **ann_kw)
        if until == "annotator":
            return {}

        spent = cost.get("total", cost["strong_labels"])  # run folders prepared before W-RSIS have no total
        results: dict = {
            "task": cfg.task,
            "n_strong": len(split.strong),
            "n_pseudo": len(split.unlabeled),
            "n_weak": cost.get("n_weak", 0),
            "budget_seconds": spent["seconds"],
            "budget_hours": spent["hours"],
            "budget_days": spent["days"],
        }
        # 2. pseudo-labels for the M unlabeled images, then g_phi on strong + pseudo; with pseudo.rounds R > 1 the
        # last g_phi relabels the pool and a new g_phi trains on that, R times in all (ST++). The last round's
        # pseudo-labels and g_phi are pseudo/ and segmenter/; earlier rounds' pseudo_r<k>/ and segmenter_r<k>/.
        g_phi, pseudo_summary, earlier = None, None, []
        if split.unlabeled:
            labels = None
            if weak_level(cfg) != "none":  # IL+C for W-RSIS, IL for pseudo.image_labels
                labels = weak_file if weak_file is not None else weak_from_dataset(pool, split.unlabeled)
            teacher, teacher_task, amp = f_theta, ann_task, cfg.annotator.amp
            init = out / "annotator" / "model.pt" if cfg.segmenter.init == "annotator" else None
            for r in range(1, cfg.pseudo.rounds + 1):
                sfx = "" if r == cfg.pseudo.rounds else f"_r{r}"
                pdir = out / f"pseudo{sfx}"
                # the unlabeled images' weak labels: W-RSIS reads their IL+C, and with pseudo.image_labels each
                # image's labels hold only its own classes (the networks are evaluated on val without them)
                args = (teacher, teacher_task, task, pool, split.unlabeled, pdir, cfg, amp, d, log)
                pseudo_summary = pseudo_stage(*args, weak=labels)
                if until == "pseudo":
                    return {}
                pseudo = TrainSet(pool, split.unlabeled, task, task.pseudo_labels(pdir))
                g_phi = train_stage(
                    f"segmenter{sfx}", cfg.segmenter, [strong, pseudo], task, cfg, out, resume, d, log, init
                )
                if sfx:
                    earlier.append((f"segmenter{sfx}", g_phi, pseudo_summary))
                teacher, teacher_task, amp = g_phi, task, cfg.segmenter.amp
                init = out / f"segmenter{sfx}" / "model.pt" if cfg.segmenter.init == "annotator" else None
        f_long = f_long_aug = None
        long_cfg = dataclasses.replace(cfg.annotator, iterations=g_phi_iterations(cfg))
        if cfg.controls:  # f_theta trained as long as g_phi: what g_phi's gain must beat
            f_long = annotator_stage("annotator_long", long_cfg, **ann_kw)
        if cfg.controls_augmented:  # and with g_phi's augmentation, which alone may explain its lead
            aug_cfg = dataclasses.replace(long_cfg, color_aug=True, cutmix=True)
            if f_long is not None and aug_cfg == long_cfg:  # f_theta is augmented already: one network, once
                log(
                    "annotator_long_aug: f_theta already trains with colour jitter, cutout and CutMix, so the "
                    "augmented control is annotator_long"
                )
                f_long_aug = f_long
            else:
                f_long_aug = annotator_stage("annotator_long_aug", aug_cfg, **ann_kw)
        if until in ("pseudo", "segmenter"):
            return {}

        # 3. evaluation of both networks on val
        results["pseudo_labels"] = pseudo_summary
        if val is None:
            results["annotation_net"] = results["segmentation_net"] = None
            results["wall_seconds"] = stage_seconds(out)
            if d.main:
                write_json(out / "results.json", results)
            log(f"done (data.val_split is null: not evaluated; `budgetseg evaluate {out} --val-root R` scores it)")
            return results
        ann_opts = PLAIN
        if ann_task.class_inputs:  # W-RSIS on val is given the IL+C labels an annotator would give (from the masks)
            ann_opts = InferOptions(weak=weak_from_dataset(val, val_ids))
        args = (ann_task, val, val_ids, cfg, out, d, log, ann_opts)
        results["annotation_net"] = evaluate_stage("annotator", f_theta, *args)
        if f_long is not None:
            results["annotation_net_long"] = evaluate_stage("annotator_long", f_long, *args)
        if f_long_aug is not None:  # the plain control itself where f_theta is augmented already: scored once
            results["annotation_net_long_aug"] = (
                results["annotation_net_long"]
                if f_long_aug is f_long
                else evaluate_stage("annotator_long_aug", f_long_aug, *args)
            )
        results["segmentation_net"] = (
            evaluate_stage("segmenter", g_phi, task, val, val_ids, cfg, out, d, log) if g_phi is not None else None
        )
        if earlier:  # ST++ rounds before the last: their pseudo-label quality and g_phi
            results["earlier_rounds"] = [
                {"pseudo_labels": ps, "segmentation_net": evaluate_stage(n, m, task, val, val_ids, cfg, out, d, log)}
                for n, m, ps in earlier
            ]
        results["wall_seconds"] = stage_seconds(out)
        if d.main:
            write_json(out / "results.json", results)
        barrier(d)
        seg = results["segmentation_net"]
        log(
            f"done: f_theta {task.metric_label} {figure(results['annotation_net'][task.metric])}"
            + (f", g_phi {task.metric_label} {figure(seg[task.metric])}" if seg else "")
            + f" -> {out / 'results.json'}"
        )
        return results
