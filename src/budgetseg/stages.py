"""The stages of a run, each into its own folder of the run folder and skipped when its output is there: a
network trained (train_stage; f_theta through the annotator cache: annotator_stage), pseudo-labels
(pseudo_stage), a network scored on val (evaluate_stage). budgetseg.pipeline.run puts them in order."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from budgetseg import modelfile
from budgetseg.config import NEUTRAL_KEYS, RunConfig, TrainConfig
from budgetseg.data.pool import Pool
from budgetseg.data.sample import SegDataset, encode_label_png
from budgetseg.data.transforms import resolution
from budgetseg.dist import Dist, barrier, loader_workers
from budgetseg.engine.batches import TrainSet
from budgetseg.engine.infer import predict
from budgetseg.engine.train import train
from budgetseg.errors import BudgetsegError
from budgetseg.io import atomic_copy, atomic_write, write_json
from budgetseg.models.encoders import encoder_mean_std
from budgetseg.pseudo import predict_pool
from budgetseg.runlog import Logger
from budgetseg.semantic.align import SAMPLE, class_prior, fit_alignment
from budgetseg.semantic.metrics import confusions_text, top_confusions
from budgetseg.task import PLAIN, InferOptions, Task
from budgetseg.trainlog import add_val
from budgetseg.weak import WeakLabels

PREVIEW_IMAGES = 6  # val images whose predictions each run keeps (in <net>/preview/) for picture grids


def run_meta(name: str, task: Task, rc: RunConfig) -> dict:
    """The model.pt meta of network `name` (annotator / segmenter, or a control) of run `rc` (modelfile.model_meta)."""
    role = modelfile.net_role(name)
    return modelfile.model_meta(rc.task, role, task.class_names, rc.model, rc.data, task.background, task.category_ids)


def save_model(path: Path, model: torch.nn.Module, name: str, task: Task, rc: RunConfig) -> None:
    """model.pt of network `name` (annotator / segmenter) with what it needs to run on its own (modelfile.py)."""
    modelfile.save_model(path, model, run_meta(name, task, rc))


SEGMENTER_ONLY = (
    "init",
    "strong_fraction",
    "pseudo_weight",
    "pseudo_color_aug",
    "pseudo_cutmix",
    "consistency",
    "consistency_threshold",
)


def annotator_key(cfg: RunConfig, strong: list[str], boxes: list[str] = ()) -> str:
    """Everything f_theta depends on (the strong ids, and which of them are labelled by boxes alone); runs that
    agree on it can share one trained annotator."""
    data, train = asdict(cfg.data), asdict(cfg.annotator)
    data.pop("labels")  # what f_theta sees of the mix is `boxes`; the tags it never sees
    for key in NEUTRAL_KEYS:  # speed only
        section, name = key.split(".")
        {"data": data, "annotator": train}.get(section, {}).pop(name, None)
    for k in SEGMENTER_ONLY:  # options f_theta ignores: a recipe differing only in them shares its f_theta
        train.pop(k)
    for k in ("color_aug", "cutmix", "color_aug_max_n"):  # newer keys, off: an f_theta trained before them
        if not train[k]:
            train.pop(k)
    model = asdict(cfg.model)
    model.pop("stop_threshold")  # inference only (annotator_stage gives a taken f_theta this run's meta)
    boxed, mix = [], cfg.data.labels
    if boxes:  # which images are boxed, which classes they box and how boxes become masks
        boxed = [sorted(boxes)] + ([mix.box_classes] if mix.box_classes else [])
        boxed += [mix.box_masks] if mix.box_masks != "grabcut" else []  # keys made before it stay valid
    blob = json.dumps([data, model, train, cfg.seed, cfg.task, strong] + boxed)
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
    strong: TrainSet | None = None,
) -> dict:
    """Pseudo-labels of `ids` by `teacher` (given the images' weak labels `weak`) into `pdir` (the task's
    pseudo-label folder: semantic/pseudo.py, instance/pseudo.py) unless its summary.json is there; returns the
    summary. With pseudo.align, the teacher's probabilities are first aligned to the class shares of the `strong`
    images (align_stage)."""
    if not (pdir / "summary.json").is_file():
        mean, std = encoder_mean_std(rc.model.encoder)
        t0 = time.perf_counter()
        kw = dict(size=resolution(rc.data), mean=mean, std=std, amp=amp)
        factors = align_stage(teacher, teacher_task, pool, ids, pdir, rc, strong, d, log, weak=weak, **kw)
        kw |= dict(d=d, workers=loader_workers(rc.data.num_workers, d), class_weights=factors)
        predict_pool(teacher, teacher_task, pool, ids, pdir, rc.pseudo, weak=weak, **kw)
        summary = task.pseudo_labels(pdir).finalize(pool, ids, rc.pseudo, d)  # split across ranks
        if factors is not None:
            summary["align_factors"] = dict(zip(teacher_task.class_names, factors, strict=True))
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


def align_stage(
    teacher: torch.nn.Module,
    teacher_task: Task,
    pool: Pool,
    ids: list[str],
    pdir: Path,
    rc: RunConfig,
    strong: TrainSet | None,
    d: Dist,
    log: Logger,
    weak: WeakLabels | None = None,
    **kw,
) -> tuple[float, ...] | None:
    """pseudo.align's per-class factors (semantic/align.py), fitted once by rank 0 on up to align.SAMPLE images
    spread over `ids` and kept in pdir/align.json, so that a resumed run labels with the same ones; None without
    pseudo.align. kw: size, mean, std, amp as engine.infer.predict takes them."""
    if not rc.pseudo.align or not ids:
        return None
    if strong is None or not len(strong):  # on every rank: one raising alone would leave the others at the barrier
        raise BudgetsegError("pseudo.align needs the strong images' labels to align to")
    path = pdir / "align.json"
    if d.main and not path.is_file():
        prior = class_prior(strong, len(teacher_task.class_names))
        options = InferOptions(rc.pseudo.tta, tuple(rc.pseudo.scales), weak)
        sample = spread(ids, SAMPLE)
        factors = fit_alignment(teacher, teacher_task, pool, sample, prior, options, device=d.device, **kw)
        names = teacher_task.class_names
        write_json(
            path,
            {
                "images": sample,
                "prior": dict(zip(names, prior.tolist(), strict=True)),
                "factors": dict(zip(names, factors.tolist(), strict=True)),
            },
        )
    barrier(d)
    factors = tuple(json.loads(path.read_text())["factors"].values())
    log(
        f"{pdir.name}: aligned to the strong labels' class shares, factors "
        + ", ".join(f"{n} {w:.2f}" for n, w in zip(teacher_task.class_names, factors, strict=True))
    )
    return factors


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
    boxes: list[str] = (),
) -> torch.nn.Module:
    """f_theta (or its longer control) trained on the strong images (`boxes` of them labelled by boxes alone)
    into out/<name>/, taken from or put into the cache (cache_dir/<annotator_key>/) that runs agreeing on
    everything it depends on share."""
    key_cfg = dataclasses.replace(rc, annotator=train_cfg)
    cached = Path(cache_dir) / annotator_key(key_cfg, strong.ids, boxes) / "model.pt" if cache_dir else None
    folder = out / name
    if cached is not None and cached.is_file() and not (folder / "model.pt").is_file() and d.main:
        folder.mkdir(exist_ok=True)
        atomic_copy(cached.with_name("train.json"), folder / "train.json")
        modelfile.copy_model(cached, folder / "model.pt", run_meta(name, task, rc))  # last, as in train_stage
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


def scoring_kw(name: str, rc: RunConfig, d: Dist, options: InferOptions) -> dict:
    """engine.infer.predict's keywords for scoring network `name` of run `rc`: its resolution, normalisation and
    precision."""
    mean, std = encoder_mean_std(rc.model.encoder)
    amp = (rc.segmenter if name.startswith("segmenter") else rc.annotator).amp  # the network's own precision
    workers = loader_workers(rc.data.num_workers, d)
    return dict(size=resolution(rc.data), mean=mean, std=std, d=d, workers=workers, amp=amp, options=options)


def spread(ids: list[str], n: int) -> list[str]:
    """`n` ids evenly spaced over `ids` (all of them when there are fewer): consecutive frames of a video look
    alike, so a picture grid of the first few would show one scene."""
    if len(ids) <= n:
        return list(ids)
    return [ids[round(i * (len(ids) - 1) / max(n - 1, 1))] for i in range(n)]


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
    ev = task.evaluator()
    preview = set(spread(val_ids, PREVIEW_IMAGES))
    stream = predict(model, val, val_ids, task, progress=f"evaluating {name}", **scoring_kw(name, rc, d, options))
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


def stop_threshold_stage(
    name: str,
    model,
    task: Task,
    val: SegDataset,
    val_ids: list[str],
    rc: RunConfig,
    out: Path,
    d: Dist,
    log: Logger,
    options: InferOptions,
    thresholds: tuple[float, ...],
) -> dict:
    """Network `name` (a task with a stop test) scored on val_ids at each stop threshold of `thresholds`, from one
    pass of the network (its decoded outputs finished once per threshold), into out/<name>/eval.json (read back if
    there): {"stop_threshold": its own, "stop_thresholds": [{"stop_threshold": t, <the evaluator's figures>}, ...],
    "seconds", "images"}. A W-RSIS network is given the counts: the same figures at every threshold."""
    path = out / name / "eval.json"
    if path.is_file():
        return json.loads(path.read_text())
    t0 = time.perf_counter()
    tasks = [dataclasses.replace(task, stop_threshold=t) for t in thresholds]
    evs = [t.evaluator() for t in tasks]
    kw = scoring_kw(name, rc, d, options)
    for sample, steps in predict(model, val, val_ids, task, progress=f"evaluating {name}", finish=False, **kw):
        for t, ev in zip(tasks, evs, strict=True):
            t.score(ev, sample, t.finish(steps))
    rows = [{"stop_threshold": t, **ev.evaluate()} for t, ev in zip(thresholds, evs, strict=True)]
    res = {"stop_threshold": task.stop_threshold, "stop_thresholds": rows}
    res |= {"seconds": round(time.perf_counter() - t0, 2), "images": len(val_ids)}
    if d.main:
        write_json(path, res)
    figures = ", ".join(f"{r['stop_threshold']:g} {figure(r[task.metric])}" for r in rows)
    log(f"{name}: val {task.metric_label} at each stop threshold: {figures}")
    return res


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
