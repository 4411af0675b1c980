"""What a run reads and what its labels cost, before anything trains: the pool and val (open_pool_and_val), the
label level the unlabeled images are bought at (weak_level), every input file decoded (check_inputs), the split
of N strong images and the rest, and its cost (prepare: split/, cost.json, config.yaml of the run folder)."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

from tqdm import tqdm

from budgetseg.config import RunConfig, save_config, saved_config_diff
from budgetseg.cost import (
    LEVEL_NAMES,
    CostModel,
    describe_seconds,
    max_strong_at,
    parse_budget,
    weak_seconds,
)
from budgetseg.data.pool import ImageFolder, Pool
from budgetseg.data.readers import open_split
from budgetseg.data.sample import SegDataset
from budgetseg.data.stats import DatasetStats, cost_statistics, dataset_stats
from budgetseg.dist import Dist, barrier, gather_objects
from budgetseg.errors import BudgetsegError, input_error
from budgetseg.io import write_json
from budgetseg.runlog import Logger
from budgetseg.splits import Split, make_mix_split, read_ids, read_split, write_split
from budgetseg.task import Task
from budgetseg.tasks import task_class
from budgetseg.weak import WeakLabels


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


def check_inputs(
    pool: Pool, pool_ids: list[str], val: SegDataset | None, val_ids: list[str], d: Dist, max_objects: int | None
) -> None:
    """Decode every image and label file the run will read (this rank's share; labels where the pool has them,
    all of val's), and refuse a pool image with more objects than the task's training targets hold (`max_objects`,
    None: no limit). The progress bar's line is cleared before an error is raised, so the error has its own line."""
    items = [(pool, i) for i in pool_ids] + [(val, i) for i in val_ids]
    error = None
    with tqdm(items[d.rank :: d.world], desc="checking input files", leave=False, disable=not d.main) as bar:
        for ds, i in bar:
            try:
                check_sample(ds, i, ds is val, None if ds is val else max_objects)
            except BudgetsegError as e:
                error = str(e)
                break
    errors = [e for e in gather_objects(d, error) if e]
    if errors:
        raise BudgetsegError(errors[0])


def check_sample(ds: SegDataset, i: str, is_val: bool, max_objects: int | None) -> None:
    """Decode image `i` of `ds` and its labels: a val object needs its mask (scoring), a training image no more
    objects than `max_objects` (its target's limit, None: none)."""
    sample = ds.load(i)
    if is_val and len(sample.boxes):
        raise input_error(ds.image_path(i), f"{len(sample.boxes)} val object(s) have a box and no mask")
    n = len(sample.instance_masks)
    if max_objects is not None and n > max_objects:
        raise input_error(ds.image_path(i), f"{n} objects in one image; the instance task's targets hold {max_objects}")


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


def box_price(
    chosen: list[str] | None, measured: DatasetStats, spi: dict[str, float], names: list[str], model: CostModel
) -> dict[str, float]:
    """`spi` with BB priced for the classes `chosen` alone (data.labels.box_classes: their classes verified, their
    objects boxed: DatasetStats.of_classes); as it is without them. Unknown class names are a one-line error."""
    if chosen is None:
        return spi
    known = names[1:] if measured.background else names  # the object classes
    unknown = [c for c in chosen if c not in known]
    if unknown or not chosen:
        what = f"unknown class {unknown[0]!r}" if unknown else "names no class"
        raise BudgetsegError(f"config key data.labels.box_classes: {what} (classes: {', '.join(known)})")
    return spi | {"bb": model.seconds_per_image(measured.of_classes(chosen))["bb"]}


def box_ids(cfg: RunConfig, pool: Pool, pool_ids: list[str], strong: list[str]) -> list[str]:
    """The ids of data.labels.boxes_file (checked: in the pool, labelled, not among the mask images `strong`): the
    images the simulation labels by boxes alone; [] without the file."""
    if cfg.data.labels.boxes_file is None:
        return []
    path = Path(cfg.data.labels.boxes_file)
    ids, known, masked = read_ids(path), set(pool_ids), set(strong)
    for bad, what in (
        ([i for i in ids if i not in known], "are not in the pool"),
        ([i for i in ids if i in masked], f"are in data.strong's file {Path(cfg.data.strong).name} too"),
        ([i for i in ids if i in known and not pool.has_labels(i)], "have no label files to draw boxes from"),
    ):
        if bad:
            raise input_error(path, f"{len(bad)} id(s) {what}, e.g. {bad[0]!r}")
    return ids


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


def cost_of(
    cfg: RunConfig, measured: DatasetStats, measured_on: str, names: list[str]
) -> tuple[dict[str, float], dict]:
    """Seconds per image at each level (BB for data.labels.box_classes alone where given: box_price; `names` the
    pool's classes) and what they rest on (statistics, their source, action times)."""
    c = cfg.cost
    model = CostModel(c.verify_s, c.count_s, c.box_s, c.mask_s, c.assisted_mask_s, c.dense_s)
    stats, about = cost_statistics(
        measured,
        measured_on,
        c.preset,
        classes=c.classes,
        classes_per_image=c.classes_per_image,
        objects_per_image=c.objects_per_image,
    )
    spi = box_price(cfg.data.labels.box_classes, measured, model.seconds_per_image(stats), names, model)
    return spi, {"statistics": asdict(stats), **about, "action_seconds": asdict(model)}


def prepare(
    cfg: RunConfig,
    out: Path,
    pool: Pool,
    pool_ids: list[str],
    started: bool,
    resume: bool,
    d: Dist,
    log: Logger,
    weak: WeakLabels | None = None,
) -> tuple[Split, dict]:
    """Write config.yaml, split/ and cost.json, or check them when an earlier start of this run (`started`,
    decided before any rank writes) left them. `weak`: the data.weak_labels file's labels; for image-level tags
    (pseudo.image_labels) it may tag some of the unlabeled images only: those are split.tags, and priced."""
    if started:
        return check_started(cfg, out, resume)
    level = weak_level(cfg)
    if cfg.data.strong == "random":  # the simulation: the expected cost of N images drawn from the pool
        split, spi, about = random_split(cfg, pool, pool_ids, level)
    else:  # what was paid for: the labels of these strong images
        split, spi, about = given_split(cfg, pool, pool_ids, log)
    if weak is not None and level == "il":
        tagged = [i for i in split.unlabeled if i in weak]
        if split.unlabeled and not tagged:
            raise input_error(cfg.data.weak_labels, "tags none of the run's unlabeled images")
        if len(tagged) < len(split.unlabeled):
            split = replace(split, tags=tagged)
    n, boxed = len(split.strong), about.get("box_images", 0)
    by_type = label_types(split, spi, level, boxed)
    strong_s = by_type["full"]["seconds"] + by_type["boxes"]["seconds"]  # images labelled by boxes alone cost boxes
    rest = by_type.get("tags") or by_type.get(level) or {"images": 0, "seconds": 0.0}  # the weakly labelled ones
    cost = {
        "n_strong": n,
        "n_weak": rest["images"],
        "strong_from": cfg.data.strong,
        "seconds_per_image": spi,
        **about,
        "labels": by_type,
        "strong_labels": describe_seconds(strong_s, cfg.hours_per_day),
        "weak_labels": describe_seconds(rest["seconds"], cfg.hours_per_day),
        "total": describe_seconds(strong_s + rest["seconds"], cfg.hours_per_day),
    }
    if d.main:
        write_split(out / "split", split)
        write_json(out / "cost.json", cost)
        save_config(out / "config.yaml", cfg)  # last: its presence marks a prepared run folder
    barrier(d)
    what = "image-level tags for " + str(cost["n_weak"]) if split.tags else LEVEL_NAMES[level] + " for them"
    bought = f" + {what} {cost['weak_labels']['hours']:.2f} h" if cost["n_weak"] else ""
    est = " (objects per image estimated from the masks)" if about["objects_estimated"] else ""
    if about["statistics"]["dense"]:
        est = f" (a label set without background: {spi['full']:g} s an image, cost.dense_s)"
    est += f" ({boxed} of them labelled by boxes alone, {spi['bb']:g} s each)" if boxed else ""
    log(
        f"N={n} strong images cost {cost['strong_labels']['hours']:.2f} h ({cost['strong_labels']['days']:.3f} d)"
        f"{est}; {len(split.unlabeled)} unlabeled{bought}"
    )
    return split, cost


def label_types(split: Split, spi: dict[str, float], level: str, boxed: int) -> dict[str, dict]:
    """What each label type of a run cost: {"full" | "boxes" | "tags" | <level>: {"images", "seconds"}}: the strong
    images with masks and those with boxes alone (`boxed` of them), the tagged unlabeled images (split.tags) or,
    at a weak `level` (il, ilc), every unlabeled image."""
    n = len(split.strong)
    out = {
        "full": {"images": n - boxed, "seconds": (n - boxed) * spi["full"]},
        "boxes": {"images": boxed, "seconds": boxed * spi["bb"]},
    }
    if split.tags:
        out["tags"] = {"images": len(split.tags), "seconds": len(split.tags) * spi["il"]}
    elif level != "none":
        out[level] = {"images": len(split.unlabeled), "seconds": len(split.unlabeled) * weak_seconds(spi, level)}
    return out


def check_started(cfg: RunConfig, out: Path, resume: bool) -> tuple[Split, dict]:
    """The split and cost of a run folder prepared before, once its config is checked to be this run's."""
    if not resume:
        raise BudgetsegError(f"{out}: run folder exists; pass --resume to continue it or choose another folder")
    keys = saved_config_diff(out / "config.yaml", cfg)
    if keys:
        raise BudgetsegError(
            f"{out}/config.yaml: differs from this run's configuration in {', '.join(keys)}; use another folder"
        )
    return read_split(out / "split"), json.loads((out / "cost.json").read_text())


def random_split(cfg: RunConfig, pool: Pool, pool_ids: list[str], level: str) -> tuple[Split, dict, dict]:
    """(N strong ids drawn from the pool and the rest, seconds per image, what they rest on) of data.strong random:
    N is n_strong, or the largest the budget buys once data.labels' boxes and tags are paid, with the `level`
    labels of the rest; data.labels.boxes more strong images are labelled by boxes, data.labels.tags unlabeled
    ones by tags (splits.make_mix_split)."""
    measured = dataset_stats(pool)
    check_has_objects(task_class(cfg.task), measured, f"{cfg.data.root} ({cfg.data.train_split})")
    spi, about = cost_of(cfg, measured, f"the {cfg.data.train_split} pool", pool.class_names)
    mix, n = cfg.data.labels, cfg.n_strong
    if n is None:
        left = parse_budget(cfg.budget, cfg.hours_per_day) - mix.boxes * spi["bb"] - mix.tags * spi["il"]
        rest = len(pool_ids) - mix.boxes - mix.tags
        n = max_strong_at(left, rest, spi, level) if left >= 0 and rest >= 0 else None
        if n is None:
            days = describe_seconds(len(pool_ids) * weak_seconds(spi, level), cfg.hours_per_day)["days"]
            mixed = f" with {mix.boxes} box and {mix.tags} tag images" if mix.boxes or mix.tags else ""
            raise BudgetsegError(
                f"budget {cfg.budget} does not pay for the {LEVEL_NAMES[level]} labels of the {len(pool_ids)} "
                f"pool images ({days:.3f} d){mixed} that the run needs"
            )
    if not n + mix.boxes:
        raise BudgetsegError(f"N=0 strong images (budget {cfg.budget}); the annotation network needs at least one")
    split = make_mix_split(pool_ids, n, mix.boxes, mix.tags, cfg.seed)
    bare = [i for i in split.strong + split.tags if not pool.has_labels(i)]
    if bare:
        raise BudgetsegError(
            f"data.strong random drew {len(bare)} image(s) without label files (e.g. {bare[0]!r}); for a partly "
            "labelled pool use data.strong: auto or a file of ids"
        )
    return split, spi, about | {"box_images": len(split.boxes)}


def given_split(cfg: RunConfig, pool: Pool, pool_ids: list[str], log: Logger) -> tuple[Split, dict, dict]:
    """(the strong ids data.strong names and the rest, seconds per image, what they rest on), priced by the
    statistics of those strong images' labels."""
    strong = given_strong(cfg, pool, pool_ids)
    measured = dataset_stats(pool, strong)
    where = cfg.data.strong if cfg.data.strong != "auto" else cfg.data.root
    check_has_objects(task_class(cfg.task), measured, where)
    spi, about = cost_of(cfg, measured, f"the {len(strong)} strong images' labels", pool.class_names)
    about["box_images"] = measured.box_images  # of the strong: labelled by boxes alone, priced as boxes
    boxed = box_ids(cfg, pool, pool_ids, strong)
    about["box_images"] += len(boxed)
    chosen = set(strong) | set(boxed)
    split = Split(sorted(chosen), sorted(i for i in pool_ids if i not in chosen), boxes=sorted(boxed))
    if cfg.n_strong not in (None, len(strong)):
        log(f"data.strong {cfg.data.strong}: N={len(strong)} strong images (n_strong={cfg.n_strong} does not apply)")
    return split, spi, about
