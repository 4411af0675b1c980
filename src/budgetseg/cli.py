"""Command-line interface: parse, build a config, call one library function, print."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import threading
from pathlib import Path

from budgetseg.cost import CostModel
from budgetseg.errors import BudgetsegError, input_error
from budgetseg.io import check_output, check_run_folder, new_folder

# the readers' format names, listed here so that --help needs no torch import
FORMATS = ("voc", "sbd", "coco", "labelstudio", "voc_train_aug", "camvid", "folders", "cvppp", "yolo")

COST = CostModel()  # the default action times, shown and used by every command that prices labels

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may reach a model hub


MAX_INT = 2**31 - 1  # no count, seed or size a command takes comes near it: a larger one is a slip


def bounded(kind: type, low: float, high: float, what: str):
    """An argparse type: a `kind` (int or float) in [low, high]; NaN, infinities and other text are refused (an
    argparse usage error, exit status 2, saying what was expected)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:  # NaN fails every comparison
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


def device_name(text: str) -> str:
    """An argparse type: a torch device name budgetseg runs on (cpu, cuda, cuda:K)."""
    if re.fullmatch(r"cpu|cuda(:\d{1,2})?", text) is None:
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:K, got {text!r}")
    return text


def stop_threshold(text: str) -> float:
    """An argparse type: an RSIS stop threshold, a number in (0, 1) (at 0 every step is an object, at 1 none is)."""
    value = bounded(float, 0.0, 1.0, "a number in (0, 1)")(text)
    if value in (0.0, 1.0):
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
    return value


def stop_thresholds(text: str) -> tuple[float, ...]:
    """An argparse type: comma-separated stop thresholds, e.g. 0.3,0.4,0.5."""
    values = tuple(stop_threshold(x.strip()) for x in text.split(",") if x.strip())
    if not values:
        raise argparse.ArgumentTypeError(f"expected numbers in (0, 1), e.g. 0.3,0.4,0.5, got {text!r}")
    return values


count = bounded(int, 0, MAX_INT, "a whole number >= 0")
positive_int = bounded(int, 1, MAX_INT, "a whole number >= 1")
seconds = bounded(float, 0.0, 1e9, "a number of seconds >= 0")
per_image = bounded(float, 0.0, 1e6, "a number >= 0")
hours_per_day = bounded(float, 1 / 60, 24.0, "hours a day, from 1/60 to 24")


def _emit(args: argparse.Namespace, obj: dict, text: str) -> None:
    print(_json(obj) if args.json else text)  # every command that prints a result takes --json


def _json(obj: dict) -> str:
    """Strict JSON (NaN and infinities as null, as every JSON file budgetseg writes)."""
    from budgetseg.io import finite

    return json.dumps(finite(obj), indent=2, allow_nan=False)


def _existing(*paths: Path | None) -> None:
    """One-line error for the first given path that does not exist, checked before a command's heavy imports
    (torch takes seconds and a gigabyte to import)."""
    for p in paths:
        if p is not None and not p.exists():
            raise input_error(p, "no such file or folder")


# ----------------------------------------------------------------------------------------------- statistics


def _add_dataset_args(p: argparse.ArgumentParser, required: bool = False, plain_folder: bool = False) -> None:
    """--format, --root, --split, --images and the label options. plain_folder: --images alone is a folder of
    photos (select)."""
    p.add_argument("--format", choices=FORMATS, required=required, help="dataset layout")
    p.add_argument("--root", type=Path, required=required, help="dataset folder (or COCO JSON file)")
    p.add_argument("--split", default=None, help="split name (default: train)")
    alone = "; without --root: a plain folder of photos" if plain_folder else ""
    p.add_argument(
        "--images",
        type=Path,
        help=f"image folder where it is not the layout's own (e.g. a CVAT export without images){alone}",
    )
    g = p.add_argument_group("label options (where the layout does not say)")
    g.add_argument("--masks", type=Path, help="format folders: the folder of semantic masks (one class index a pixel)")
    g.add_argument("--instance-masks", type=Path, help="format folders: the folder of instance masks (an id an object)")
    g.add_argument("--instance-class", help="format folders: the class name of instance masks without semantic ones")
    g.add_argument(
        "--no-background",
        dest="background",
        action="store_const",
        const=False,
        help="class 0 is a class of its own, not a background (camvid: the default)",
    )
    g.add_argument("--void", help="label values read as ignored, comma-separated (camvid: 11)")


def _label_options(args: argparse.Namespace):
    from budgetseg.data.readers import LabelOptions

    try:
        void = None if args.void is None else tuple(int(v) for v in args.void.split(",") if v.strip())
    except ValueError:
        raise BudgetsegError(f"--void {args.void!r}: expected comma-separated label values, e.g. 11") from None
    return LabelOptions(args.masks, args.instance_masks, args.instance_class, args.background, void)


def _open_args_dataset(args: argparse.Namespace):
    """The dataset of --format, --root, --split, --images and the label options."""
    from budgetseg.data.readers import open_dataset

    return open_dataset(args.format, args.root, args.split, images=args.images, labels=_label_options(args))


def _add_stats_args(p: argparse.ArgumentParser, plain_folder: bool = False) -> None:
    _add_dataset_args(p, plain_folder=plain_folder)
    p.add_argument("--preset", choices=["voc"], default="voc", help="statistics preset (default: voc)")
    p.add_argument("--classes", type=positive_int, help="C: classes in the label set, background excluded")
    p.add_argument("--classes-per-image", type=per_image, help="k: classes present per image")
    p.add_argument("--objects-per-image", type=per_image, help="n: objects per image")
    g = p.add_argument_group("annotation times (seconds; sources in the README's cost section)")
    g.add_argument(
        "--seconds-per-class",
        "--verify-s",
        dest="verify_s",
        type=seconds,
        default=COST.verify_class_s,
        help=f"say whether one class is present (default {COST.verify_class_s:g})",
    )
    g.add_argument(
        "--seconds-per-count",
        "--count-s",
        dest="count_s",
        type=seconds,
        default=COST.count_s,
        help=f"count the objects of one present class (default {COST.count_s:g})",
    )
    g.add_argument(
        "--seconds-per-box",
        "--box-s",
        dest="box_s",
        type=seconds,
        default=COST.box_s,
        help=f"one box by extreme clicking (default {COST.box_s:g})",
    )
    g.add_argument(
        "--seconds-per-mask",
        "--mask-s",
        dest="mask_s",
        type=seconds,
        default=COST.mask_s,
        help=f"one mask drawn as a polygon (default {COST.mask_s:g})",
    )
    g.add_argument(
        "--seconds-per-assisted-mask",
        dest="assisted_mask_s",
        type=seconds,
        default=COST.assisted_mask_s,
        help=f"one mask with an interactive assistant such as SAM (default {COST.assisted_mask_s:g})",
    )
    g.add_argument(
        "--seconds-per-dense-image",
        dest="dense_s",
        type=float,
        default=COST.dense_s,
        help=f"one image of a label set without background painted whole (default {COST.dense_s:g}: Cityscapes' 1.5 h)",
    )


def _stats_from_args(args: argparse.Namespace, ds=None) -> tuple:
    """(LabelStats, {"statistics_from", "objects_estimated"}): measured on the labelled images of `ds` (or of
    --format/--root), else the preset; --classes, --classes-per-image and --objects-per-image override."""
    from budgetseg.data.stats import cost_statistics, dataset_stats

    if ds is None and (args.root is not None or args.format is not None):
        if args.root is None or args.format is None:
            raise BudgetsegError("--format and --root go together")
        ds = _open_args_dataset(args)
    measured = dataset_stats(ds) if ds is not None else None
    on = f"{measured.images} labelled images" if measured else ""
    return cost_statistics(
        measured,
        on,
        fallback=args.preset,
        classes=args.classes,
        classes_per_image=args.classes_per_image,
        objects_per_image=args.objects_per_image,
    )


def _stats_line(obj: dict) -> str:
    est = " (estimated: connected components of the class masks)" if obj.get("objects_estimated") else ""
    dense = (  # its Full is no sum over objects: say where the figure comes from
        "\nno background class: a full label paints every pixel, priced per image (--seconds-per-dense-image)"
        if obj.get("dense")
        else ""
    )
    return (
        f"C={obj['classes']} classes, k={obj['classes_per_image']:.3f} classes/image, "
        f"n={obj['objects_per_image']:.3f} objects/image{est}; {obj['statistics_from']}{dense}"
    )


def _cost_model(args: argparse.Namespace) -> CostModel:
    times = (args.verify_s, args.count_s, args.box_s, args.mask_s, args.assisted_mask_s, args.dense_s)
    if min(times) < 0:
        raise BudgetsegError("annotation times must be >= 0 seconds")
    return CostModel(*times)


def cmd_cost(args: argparse.Namespace) -> None:
    from budgetseg.cost import LEVEL_NAMES, cost_table
    from budgetseg.table import markdown_table

    stats, about = _stats_from_args(args)
    obj = cost_table(stats, _cost_model(args)) | about
    rows = [[LEVEL_NAMES[k], v, v / 3600 * 1000] for k, v in obj["seconds_per_image"].items()]
    text = _stats_line(obj) + "\n" + markdown_table(["level", "s/image", "h per 1000 images"], rows, digits=2)
    _emit(args, obj, text)


def cmd_plan(args: argparse.Namespace) -> None:
    from budgetseg.cost import LEVEL_NAMES, describe_seconds, parse_budget, plan_budget
    from budgetseg.table import markdown_table

    (stats, about), model = _stats_from_args(args), _cost_model(args)
    if (args.budget is None) == (args.full is None):
        raise BudgetsegError("give exactly one of --budget (e.g. 4d) or --full N")
    if args.full is not None:
        if args.full < 0:
            raise BudgetsegError(f"--full must be >= 0, got {args.full}")
        budget_s = args.full * model.seconds_per_image(stats)["full"]
    else:
        budget_s = parse_budget(args.budget, args.hours_per_day)
    obj = plan_budget(budget_s, stats, model, args.pool, args.hours_per_day) | about
    if args.full is not None:
        obj["full_images"] = args.full
    b = describe_seconds(budget_s, args.hours_per_day)
    head = f"budget: {b['seconds']:g} s = {b['hours']:g} h = {b['days']:g} d ({args.hours_per_day:g} h/day)"
    if args.full is not None:
        head = f"{args.full} fully labelled images cost {b['seconds']:g} s = {b['hours']:g} h = {b['days']:g} d"
    rows = [[LEVEL_NAMES[k], obj["seconds_per_image"][k], v] for k, v in obj["images_per_level"].items()]
    text = head + "\n" + _stats_line(obj) + "\n"
    text += markdown_table(["level", "s/image", "images within budget"], rows, digits=2)
    if "mixed" in obj:
        rows = []
        for weak, m in obj["mixed"].items():
            if m["n_full"] is None:
                rows.append([LEVEL_NAMES[weak], "does not fit", "-", "-"])
            else:
                rows.append([LEVEL_NAMES[weak], m["n_full"], m["n_weak"], m["spent_seconds"]])
        text += f"\n\nmixed plans on a pool of {args.pool} images: N full + the rest at a weak level\n"
        text += markdown_table(["rest labelled as", "largest N full", "weak images", "seconds spent"], rows, 1)
        rows = []
        for what, m in (("boxes alone", obj["box_mixes"]["boxes"]), ("a quarter on masks", obj["box_mixes"]["mix"])):
            fits = m["n_full"] is not None
            rows.append([what, m["n_full"] if fits else "does not fit", m["n_boxes"] if fits else "-"])
        text += "\n\nmasks and boxes (budgetseg compare's boxes and mix; the rest pseudo-labelled):\n"
        text += markdown_table(["plan", "N full", "images with boxes"], rows)
    _emit(args, obj, text)


def cmd_stats(args: argparse.Namespace) -> None:
    from budgetseg.data.stats import dataset_stats
    from budgetseg.table import markdown_table

    ds = _open_args_dataset(args)
    s = dataset_stats(ds, progress=not args.json)
    unlabeled = len(ds.ids) - s.images
    obj = s.to_dict() | {"unlabeled": unlabeled}  # the split's images without labels (a pool to pseudo-label)
    rows = [[name, s.per_class_images[name], s.per_class_instances[name]] for name in s.per_class_images]
    est = " (estimated: connected components of the class masks)" if s.objects_estimated else ""
    text = (
        f"{s.images} labelled images"
        + (f" (+{unlabeled} without labels)" if unlabeled else "")
        + f", {s.classes} classes, {s.classes_per_image:.3f} classes/image, {s.objects_per_image:.3f} objects/image"
        + est
        + "\n"
        + markdown_table(["class", "images", "instances" + (" (estimated)" if est else "")], rows)
    )
    _emit(args, obj, text)


def cmd_split(args: argparse.Namespace) -> None:
    from budgetseg.cost import max_strong_at, parse_budget
    from budgetseg.splits import make_split, write_split

    if args.format is None or args.root is None:
        raise BudgetsegError("split needs --format F --root R")
    if (args.n is None) == (args.budget is None):
        raise BudgetsegError("give exactly one of --n N or --budget B")
    check_output(args.out, "--out", folder=True)
    # strong.txt and unlabeled.txt appear together or not at all: two splits into one --out cannot mix
    with new_folder(args.out, "a split folder is never overwritten; choose another --out") as tmp:
        ds = _open_args_dataset(args)
        n = args.n
        if args.budget is not None:
            spi = _cost_model(args).seconds_per_image(_stats_from_args(args, ds)[0])
            n = max_strong_at(parse_budget(args.budget, args.hours_per_day), len(ds.ids), spi, args.weak)
            if n is None:
                raise BudgetsegError(f"budget {args.budget} does not cover {args.weak} labels for the pool")
        split = make_split(list(ds.ids), n, args.seed)
        write_split(tmp, split)
    obj = {
        "n_strong": len(split.strong),
        "n_unlabeled": len(split.unlabeled),
        "seed": args.seed,
        "out": str(args.out),
    }
    _emit(
        args,
        obj,
        f"wrote {args.out}/strong.txt ({len(split.strong)} ids) and unlabeled.txt "
        f"({len(split.unlabeled)} ids), seed {args.seed}",
    )


def cmd_select(args: argparse.Namespace) -> None:
    from budgetseg.io import write_text

    if args.images is None and args.root is None:
        raise BudgetsegError("give --images DIR (a folder of photos) or --format F --root R [--split S]")
    if (args.n is None) == (args.budget is None):
        raise BudgetsegError("give exactly one of --n N or --budget B (e.g. 0.3d)")
    check_output(args.out, "--out")
    if args.mix_share is not None and args.boxes_out is None:
        raise BudgetsegError("--mix-share splits the budget between masks and boxes: give --boxes-out too")
    args.mix_share = 0.25 if args.mix_share is None else args.mix_share
    if args.boxes_out is not None:
        if args.budget is None:
            raise BudgetsegError("--boxes-out splits a --budget between masks and boxes: give --budget")
        if not 0.0 < args.mix_share < 1.0:
            raise BudgetsegError(f"--mix-share: the share of the budget on masks lies in (0, 1), got {args.mix_share}")
        check_output(args.boxes_out, "--boxes-out")
        if args.boxes_out.resolve() == args.out.resolve():
            raise BudgetsegError("--boxes-out and --out name the same file")
    if args.copy is not None:
        check_output(args.copy, "--copy", folder=True)
    if args.root is None:  # a plain folder of photos
        from budgetseg.data.pool import ImageFolder

        ds = ImageFolder(args.images)
    else:
        if args.format is None:
            raise BudgetsegError("--root needs --format")
        ds = _open_args_dataset(args)
    if not ds.ids:
        raise BudgetsegError(f"{args.images or args.root}: no images to select from")
    obj: dict = {"strategy": args.strategy, "seed": args.seed, "pool": len(ds.ids)}
    n, n_box, text = args.n, 0, ""
    if args.budget is not None:
        n, n_box, text = _select_budget(args, ds, obj)
    from budgetseg.loop.select import copy_images, select  # torch: after the cheap checks

    chosen = select(ds, n + n_box, args.strategy, args.seed)  # one order: masks on its first n, boxes on the rest
    ids, boxed = chosen[:n], chosen[n:]
    if args.copy is not None:  # before ids.txt: a failed copy leaves neither behind
        obj["copied_to"] = str(copy_images(ds, chosen, args.copy))
    if args.boxes_out is not None:
        write_text(args.boxes_out, "".join(f"{i}\n" for i in boxed))
        obj |= {"n_boxes": len(boxed), "boxes_out": str(args.boxes_out), "box_ids": boxed}
    write_text(args.out, "".join(f"{i}\n" for i in ids))
    obj |= {"n": len(ids), "out": str(args.out), "ids": ids}
    text = f"selected {len(ids)} of {len(ds.ids)} images ({args.strategy}, seed {args.seed}) -> {args.out}" + text
    if args.boxes_out is not None:
        text += f"\nand {len(boxed)} more to label with boxes -> {args.boxes_out}"
    if args.copy is not None:
        text += f"\ncopied the images to {args.copy}"
    _emit(args, obj, text)


def _select_budget(args: argparse.Namespace, ds, obj: dict) -> tuple[int, int, str]:
    """(images for full masks, images for boxes, a line of text) that select's --budget buys: full masks alone by
    the one budget -> N rule, or with --boxes-out --mix-share of it on masks and the rest on boxes (cost.py)."""
    from budgetseg.cost import box_counts, describe_seconds, max_strong_at, parse_budget

    stats, about = _stats_from_args(args, ds)
    spi = _cost_model(args).seconds_per_image(stats)
    budget_s = parse_budget(args.budget, args.hours_per_day)
    obj |= {"budget": describe_seconds(budget_s, args.hours_per_day), "seconds_per_full_image": spi["full"], **about}
    if args.boxes_out is not None:
        counts = box_counts(budget_s, len(ds.ids), spi, args.mix_share)
        if counts is None:
            raise BudgetsegError(
                f"budget {args.budget} buys no mask with {args.mix_share:g} of it ({spi['full']:g} s an image) and "
                f"a box image with the rest ({spi['bb']:g} s)"
            )
        obj |= {"seconds_per_box_image": spi["bb"], "mix_share": args.mix_share}
        text = f"\n{args.budget}: {counts[0]} images with full masks ({spi['full']:g} s each) and {counts[1]} with "
        return counts[0], counts[1], text + f"boxes ({spi['bb']:g} s each); " + _stats_line(obj | stats.__dict__)
    n = max_strong_at(budget_s, len(ds.ids), {"full": spi["full"]}) or 0  # the one budget -> N rule (cost.py)
    if n == 0:
        raise BudgetsegError(f"budget {args.budget} buys no fully labelled image ({spi['full']:g} s each)")
    text = f"\n{args.budget} buys {n} fully labelled images at {spi['full']:g} s each; "
    return n, 0, text + _stats_line(obj | stats.__dict__)


def shipped_configs() -> dict[str, Path]:
    """name -> file of the configs shipped inside the package (budgetseg/configs/*.yaml)."""
    from importlib.resources import files

    folder = Path(str(files("budgetseg") / "configs"))
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def cmd_config(args: argparse.Namespace) -> None:
    configs = shipped_configs()
    if args.action == "list":
        _emit(args, {"configs": list(configs)}, "\n".join(configs))
        return
    if args.name is None:
        raise BudgetsegError(f"config {args.action} needs a NAME (one of: {', '.join(configs)})")
    name = args.name.removesuffix(".yaml")
    if name not in configs:
        raise BudgetsegError(f"no shipped config {args.name!r} (budgetseg config list: {', '.join(configs)})")
    text = configs[name].read_text()
    if args.action == "init" and args.out is not None:
        from budgetseg.io import write_text

        if args.out.exists():
            raise BudgetsegError(f"{args.out}: exists; config init does not overwrite a file")
        write_text(args.out, text)
        print(f"wrote {args.out} (from {name}); edit its paths, then: budgetseg run {args.out} --out runs/mine")
        return
    sys.stdout.write(text)


def cmd_data(args: argparse.Namespace) -> None:
    from budgetseg.data.fashion_scenes import FashionScenesConfig, build_fashion_scenes

    cfg = FashionScenesConfig(train=args.train, val=args.val, size=args.size, seed=args.seed)
    out = build_fashion_scenes(args.out, cfg, args.fashion_mnist, overwrite=args.overwrite, progress=True)
    print(f"wrote fashion-scenes ({cfg.train} train + {cfg.val} val images, {cfg.size} px) to {out}")


# ----------------------------------------------------------------------------------------------- pipeline


def _add_tta_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tta",
        action="store_true",
        help="semantic networks: average the class probabilities over the mirror and the --tta-scales "
        "(better masks, 7.6x the compute with the default scales)",
    )
    p.add_argument("--tta-scales", metavar="S", help="comma-separated input scales for --tta (default 0.75,1,1.5)")


def _add_stop_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--stop-threshold",
        type=stop_threshold,
        metavar="T",
        help="instance networks: emit objects until the objectness falls below T, in (0, 1) (default: the "
        "network's own, model.stop_threshold; lower finds more objects)",
    )


RUN_OUT = "run folder (needed with a config file)"
SWEEP_OUT = "sweep folder: a run folder per N, full/ (the reference) and report/; the same again continues it"
COMPARE_OUT = "folder of the comparison's runs and of compare.md, compare.json and compare_<metric>.png"


def _add_run_args(p: argparse.ArgumentParser, out: str = RUN_OUT) -> None:
    """CONFIG, --set, --out and --encoder-weights. out: what --out is; a command that takes a run folder as CONFIG
    (out RUN_OUT) needs --out only with a config file, the others always."""
    runs = out == RUN_OUT
    config = "YAML config (see configs/ and budgetseg config list)" + (", or a run folder to continue" if runs else "")
    p.add_argument("config", type=Path, help=config)
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set n_strong=50 --set segmenter.iterations=600",
    )
    p.add_argument("--out", type=Path, required=not runs, help=out)
    p.add_argument(
        "--encoder-weights",
        metavar="PATH",
        help="encoder state dict (or imagenet / none); same as --set model.encoder_weights=PATH",
    )


def _overrides(args: argparse.Namespace) -> list[str]:
    extra = [f"model.encoder_weights={args.encoder_weights}"] if args.encoder_weights else []
    return [*args.overrides, *extra]


def _config_and_out(args: argparse.Namespace):
    """(RunConfig, run folder) from CONFIG --out RUN, or from a run folder given as CONFIG (its config.yaml)."""
    from budgetseg.config import load_config

    if not args.config.exists():  # before the checks below, which would not name it
        raise input_error(args.config, "config file is missing")
    if args.config.is_dir():
        if not (args.config / "config.yaml").is_file():
            raise input_error(args.config, "not a run folder (no config.yaml) and not a config file")
        if args.out is not None and args.out.resolve() != args.config.resolve():
            raise BudgetsegError(f"--out {args.out}: a run folder was given ({args.config}); leave --out out")
        return load_config(args.config / "config.yaml", _overrides(args)), args.config
    if args.out is None:
        raise BudgetsegError("--out RUN is needed with a config file")
    return load_config(args.config, _overrides(args)), args.out


def _run_stage(args: argparse.Namespace, until: str) -> dict:
    cfg, out = _config_and_out(args)
    d = cfg.data
    _existing(*(Path(p) for p in (d.root, d.unlabeled, d.images, d.weak_labels) if p))
    from budgetseg.pipeline import run  # torch: after the cheap checks

    resume = args.resume or args.config.is_dir()  # a run folder given is one to continue
    return run(cfg, out, resume=resume, until=until)


def cmd_run(args: argparse.Namespace) -> None:
    res = _run_stage(args, "evaluate")
    if args.json:
        print(_json(res))


def cmd_train(args: argparse.Namespace) -> None:
    _run_stage(args, args.net)


def cmd_pseudo_label(args: argparse.Namespace) -> None:
    _run_stage(args, "pseudo")


def _tta(args: argparse.Namespace) -> dict:
    """tta and scales keywords for predict_images / evaluate_run from --tta and --tta-scales."""
    from budgetseg.config import TTA_SCALES

    if args.tta_scales is None:
        return {"tta": args.tta, "scales": TTA_SCALES}
    if not args.tta:
        raise BudgetsegError("--tta-scales needs --tta")
    try:
        scales = tuple(float(x) for x in args.tta_scales.split(",") if x.strip())
    except ValueError:
        raise BudgetsegError(f"--tta-scales {args.tta_scales!r}: expected numbers, e.g. 0.75,1,1.5") from None
    return {"tta": True, "scales": scales}


def cmd_evaluate(args: argparse.Namespace) -> None:
    tta = _tta(args)
    stops = {"stop_threshold": args.stop_threshold, "stop_thresholds": args.stop_thresholds or ()}
    other = (args.val_root, args.val_format, args.val_split, args.stop_threshold, args.stop_thresholds)
    untrained = _untrained(args.config) if args.config.is_dir() else None
    if untrained:  # evaluate scores; it does not start hours of training a run folder has not done yet
        print(
            f"budgetseg: {args.config}: {untrained} not trained yet, scoring the networks that are "
            f"(`budgetseg train {args.config} --net segmenter` or `budgetseg run {args.config}` trains the rest)",
            file=sys.stderr,
        )
    if all(v is None for v in other) and not args.tta and not untrained:
        res = _run_stage(args, "evaluate")
        nets = {"annotator": res.get("annotation_net"), "segmenter": res.get("segmentation_net")}
        obj, task_name = {"val": "the run's own", **nets}, res["task"]
    else:
        _existing(args.config, args.val_root)
        if not args.config.is_dir():
            raise BudgetsegError(
                "--val-root, --val-split, --tta and --stop-threshold(s) score a trained run: give its run folder"
            )
        check_run_folder(args.config)
        from budgetseg.config import load_config
        from budgetseg.evaluate import evaluate_run  # torch: after the cheap checks

        obj = evaluate_run(args.config, args.val_format, args.val_root, args.val_split, **tta, **stops)
        task_name = load_config(args.config / "config.yaml").task
    table = stop_threshold_table if args.stop_thresholds else evaluate_table
    _emit(args, obj, table(obj, task_name))


def _untrained(run: Path) -> str | None:
    """What run folder `run` has still to train before its pipeline can evaluate (g_phi, the controls), or None when
    nothing (or when it is no run folder, or has results.json: then the pipeline only reads or scores)."""
    if not (run / "config.yaml").is_file() or (run / "results.json").is_file():
        return None
    import dataclasses

    from budgetseg.config import control_configs, for_n, load_config

    unlabeled = run / "split" / "unlabeled.txt"
    if not (run / "annotator" / "model.pt").is_file() or not (unlabeled.is_file() and unlabeled.read_text().split()):
        return None  # nothing trained: the pipeline's own messages; no unlabeled images: f_theta is all there is
    cfg = load_config(run / "config.yaml")
    n = len((run / "split" / "strong.txt").read_text().split())
    cfg = dataclasses.replace(cfg, annotator=for_n(cfg.annotator, n))  # the controls as pipeline.recipe_for_n sees them
    names = {"segmenter": "g_phi", "annotator_long": "the control", "annotator_long_aug": "the augmented control"}
    missing = [names[k] for k in ("segmenter", *control_configs(cfg)) if not (run / k / "model.pt").is_file()]
    return " and ".join(missing) or None


def evaluate_table(obj: dict, task_name: str) -> str:
    """`evaluate`'s table: per network its headline metric (mIoU, AP50) and the task's first two further figures
    (the CVPPP SBD and |DiC|; "-" in an eval.json written before they existed), and the images scored."""
    from budgetseg.evaluate import EVALUATED
    from budgetseg.table import markdown_table
    from budgetseg.tasks import task_class

    nets = [(n, obj[n]) for n in EVALUATED if obj.get(n)]
    task = task_class(task_name)
    cols = [(task.metric, task.metric_label), *((k, label) for k, label, _ in task.extra_metrics[:2])]
    rows = [[n, *(v.get(k) for k, _ in cols), v["images"]] for n, v in nets]
    return markdown_table(["network", *(label for _, label in cols), "images"], rows, digits=4)


def stop_threshold_table(obj: dict, task_name: str) -> str:
    """`evaluate --stop-thresholds`'s table: per network and stop threshold its headline metric (AP50), every further
    figure (SBD, |DiC|, FBD, DiC) and the objects it predicted."""
    from budgetseg.evaluate import EVALUATED
    from budgetseg.table import markdown_table
    from budgetseg.tasks import task_class

    task = task_class(task_name)
    cols = [
        (task.metric, task.metric_label),
        *((k, label) for k, label, _ in task.extra_metrics),
        ("predictions", "objects"),
    ]
    rows = [
        [n, r["stop_threshold"], *(r.get(k) for k, _ in cols)]
        for n in EVALUATED
        if obj.get(n)
        for r in obj[n]["stop_thresholds"]
    ]
    return markdown_table(["network", "stop threshold", *(label for _, label in cols)], rows, digits=4)


def _config_file(args: argparse.Namespace) -> Path:
    """CONFIG of a command that takes a config file only (sweep, compare: their --out is continued instead)."""
    if args.config.is_dir():
        raise input_error(args.config, f"{args.command} takes a config file; to continue, give it and --out again")
    return args.config


def cmd_sweep(args: argparse.Namespace) -> None:
    from budgetseg.config import load_config
    from budgetseg.experiments.report import report
    from budgetseg.experiments.sweep import sweep

    if args.augmented_control and args.no_controls:
        raise BudgetsegError("--augmented-control and --no-controls: choose one")
    extra = ["controls_augmented=true"] if args.augmented_control else []
    cfg = load_config(_config_file(args), _overrides(args) + extra)
    try:
        ns = [int(x) for x in args.n.split(",") if x.strip()]
    except ValueError:
        raise BudgetsegError(f"--n {args.n!r}: expected comma-separated integers, e.g. 25,50,100") from None
    runs = sweep(cfg, ns, args.out, reference=not args.no_reference, controls=not args.no_controls)
    rep = report(runs, args.out / "report")
    _emit(args, rep, rep["table"])


def cmd_compare(args: argparse.Namespace) -> None:
    from budgetseg.config import load_config
    from budgetseg.experiments.compare import compare, markdown
    from budgetseg.tasks import METRICS

    cfg = load_config(_config_file(args), _overrides(args))
    budgets = [b.strip() for b in args.budgets.split(",") if b.strip()]
    if not budgets:
        raise BudgetsegError("--budgets: expected comma-separated budgets, e.g. 0.3d,0.4d,0.6d")
    strategies = tuple(s.strip() for s in args.strategies.split(",") if s.strip()) if args.strategies else None
    rows = compare(cfg, budgets, args.out, strategies, args.mix_share)
    metric = METRICS[cfg.task][0]
    files = [str(args.out / f) for f in ("compare.md", "compare.json", f"compare_{metric}.png")]
    _emit(args, {"rows": rows, "files": files}, markdown(rows, metric) + "wrote " + ", ".join(files))


def cmd_predict(args: argparse.Namespace) -> None:
    _existing(args.model, *args.inputs)
    check_output(args.out, "--out", inputs=args.inputs, folder=True)
    from budgetseg.loop.predict import predict_images  # torch: after the cheap checks

    kw = dict(net=args.net, batch_size=args.batch_size, device=args.device, stop_threshold=args.stop_threshold)
    res = predict_images(args.model, args.inputs, args.out, **kw, **_tta(args))
    if "labels" in res:  # semantic: label maps; instance: a predictions.json
        wrote = f"{res['labels']} label maps in {res['out']}"
    else:
        wrote = f"{res['instances']} instances in {res['predictions']}"
    text = f"{res['task']} {res['net']} on {res['images']} images ({res['device']}, {res['seconds']:g} s): {wrote}"
    _emit(args, res, text + f", overlays in {res['overlays']}")


def cmd_export(args: argparse.Namespace) -> None:
    check_run_folder(args.run)
    from budgetseg.loop.export import export_run  # torch: after the cheap checks

    url = {"image_url_prefix": args.image_url_prefix} if args.image_url_prefix is not None else {}
    res = export_run(args.run, args.to, args.out, progress=sys.stderr.isatty(), review=args.review, **url)
    least = " (those with the most expected errors; review.csv ranks them all)" if args.review is not None else ""
    text = (
        f"wrote a {res['format']} export of {res['run']} ({res['strong_images']} strong + {res['pseudo_images']} "
        f"pseudo-labelled images{least}, {res['task']}) to {res['out']}"
    )
    _emit(args, res, text)


def cmd_advise(args: argparse.Namespace) -> None:

    _existing(*args.sources, args.root)
    if args.plot is not None:
        check_output(args.plot, "--plot")
    from budgetseg.experiments.advise import advise, text  # torch: after the cheap checks

    prices = None
    given_stats = (args.classes, args.classes_per_image, args.objects_per_image)
    if args.root is not None or _cost_model(args) != COST or any(given_stats):
        if args.root is None and None in given_stats:
            raise BudgetsegError(
                "pricing labels at other action times needs the label statistics: --format F --root R (measured), "
                "or all of --classes, --classes-per-image and --objects-per-image"
            )
        stats, about = _stats_from_args(args)
        prices = _cost_model(args).seconds_per_image(stats)
    obj = advise(
        args.sources, args.budget, args.target, args.hours_per_day, args.plot, prices=prices, noise=args.noise / 100
    )
    if prices is not None:
        obj["prices"] = {"seconds_per_image": prices, **about}
    _emit(args, obj, text(obj) + (f"\nwrote {args.plot}" if args.plot else ""))


def cmd_report(args: argparse.Namespace) -> None:
    _existing(*args.runs)
    out = args.out or Path(args.runs[0]).parent / "report"
    check_output(out, "--out", inputs=args.runs, folder=True)
    from budgetseg.experiments.report import report  # torch: after the cheap checks

    rep = report([Path(r) for r in args.runs], out, title=args.title)
    _emit(args, rep, rep["table"] + "\nwrote " + ", ".join(str(f) for f in rep["files"]))


# ----------------------------------------------------------------------------------------------- parser

DESCRIPTION = """budgetseg: budget-aware semi-supervised semantic and instance segmentation. What a labelling
budget buys, which images to label, an annotation network trained on them that pseudo-labels the rest, a
segmentation network trained on both, and learning curves that say where the next budget should go."""

EXAMPLES = """examples:
  # what 8 hours of labelling buy; which 30 of your photos to label first
  budgetseg plan --budget 8h --classes 5 --objects-per-image 3
  budgetseg select --images photos/ --n 30 --out to_label.txt --copy to_label/
  # the built-in dataset, one run (f_theta -> pseudo-labels -> g_phi), then one run per N and a report
  budgetseg data fashion-scenes --out data/fashion-scenes
  budgetseg run configs/fashion_semantic.yaml --out runs/fs
  budgetseg sweep configs/fashion_semantic.yaml --out runs/sweep --n 25,50,100
  # the 50 pseudo-labels likeliest wrong, to correct in CVAT; the network on new photos, on the CPU
  budgetseg export runs/fs --to cvat --out review/ --review 50
  budgetseg predict runs/fs new_photos/ --out predictions/ --device cpu
  # which strategy one more day of labelling should go to
  budgetseg advise runs/sweep --budget 1d

budgetseg COMMAND --help lists a command's options. --debug (before or after COMMAND) shows tracebacks."""


class Parser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors (a missing argument, a value out of range) are one-line errors like
    every other error of the CLI: main prints them and exits with status 2."""

    def error(self, message: str):
        raise BudgetsegError(f"{message} (see {self.prog} --help)")


def _global_args(sub: bool) -> argparse.ArgumentParser:
    """The options every command takes, before or after its name. After it (sub) they default to nothing, so that
    the value given before the command stands."""
    p = argparse.ArgumentParser(add_help=False)
    unset = {"default": argparse.SUPPRESS} if sub else {}
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors", **unset)
    p.add_argument(
        "--max-pixels",
        type=positive_int,
        metavar="N",
        help="refuse images and label maps of more than N pixels (default 268435456, 16384 x 16384; a huge image "
        "costs about 3 bytes a pixel to read and 12 to predict on; also $BUDGETSEG_MAX_PIXELS)",
        **unset,
    )
    return p


def _command(sub, name: str, help: str) -> argparse.ArgumentParser:
    """A command's parser (a subparser of `sub`): `help` is its line in the list of commands and its description;
    it takes the global options after its name too."""
    return sub.add_parser(name, help=help, description=help, parents=[_global_args(sub=True)])


def _json_arg(p: argparse.ArgumentParser, what: str, progress: bool = False) -> None:
    note = " (progress goes to stderr)" if progress else ""
    p.add_argument("--json", action="store_true", help=f"print {what} as JSON on stdout{note}")


def _seed_arg(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--seed", type=count, default=0, help=f"random seed of {what} (default 0)")


def _hours_per_day_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--hours-per-day",
        type=hours_per_day,
        default=24.0,
        help="labelling hours in a day of budget, for budgets in days (default 24)",
    )


def _add_cost_parsers(sub) -> None:
    c = _command(sub, "cost", help="seconds per image under each supervision level")
    _add_stats_args(c)
    _json_arg(c, "the seconds per image and the statistics used")
    c.set_defaults(func=cmd_cost)

    c = _command(sub, "plan", help="what an annotation budget buys")
    _add_stats_args(c)
    c.add_argument("--budget", help="e.g. 4d, 10h, 90m, 3600s")
    c.add_argument("--full", type=count, help="instead of --budget: the cost of N fully labelled images")
    c.add_argument("--pool", type=count, help="pool size P for mixed plans (N full + P-N weak)")
    _hours_per_day_arg(c)
    _json_arg(c, "the plan")
    c.set_defaults(func=cmd_plan)

    c = _command(sub, "stats", help="statistics of a dataset")
    _add_dataset_args(c, required=True)
    _json_arg(c, "the statistics")
    c.set_defaults(func=cmd_stats)


def _add_split_parsers(sub) -> None:
    c = _command(sub, "split", help="pick N strong ids (or as many as a budget buys) from a pool")
    _add_stats_args(c)
    c.add_argument("--n", type=count, help="number of strong (fully labelled) images")
    c.add_argument("--budget", help="instead of --n: the largest N this budget buys (e.g. 0.5d)")
    c.add_argument(
        "--weak",
        choices=["none", "il", "ilc", "bb"],
        default="none",
        help="level the rest of the pool is labelled at, paid from the budget (default none)",
    )
    _hours_per_day_arg(c)
    _seed_arg(c, "the split")
    c.add_argument("--out", type=Path, required=True, help="folder for strong.txt and unlabeled.txt")
    _json_arg(c, "the split's sizes")
    c.set_defaults(func=cmd_split)

    c = _command(sub, "select", help="which images to label: random or diverse (core-set) selection")
    _add_stats_args(c, plain_folder=True)
    c.add_argument("--n", type=positive_int, help="number of images to select")
    c.add_argument("--budget", help="instead of --n: as many fully labelled images as this budget buys (e.g. 0.3d)")
    _hours_per_day_arg(c)
    c.add_argument(
        "--strategy",
        choices=["random", "diverse"],
        default="random",
        help="default random (diverse, core-set, lost to it in 5 of 6 runs on CamVid's video, tied on fashion-scenes)",
    )
    _seed_arg(c, "the selection")
    c.add_argument("--out", type=Path, required=True, help="text file for the selected ids, one per line")
    c.add_argument(
        "--boxes-out",
        type=Path,
        help="with --budget: spend --mix-share of it on full masks (--out) and the rest on boxes, whose ids go here",
    )
    c.add_argument("--mix-share", type=float, help="share of the budget on full masks with --boxes-out (default 0.25)")
    c.add_argument("--copy", type=Path, help="also copy the selected images into this new folder")
    _json_arg(c, "the selected ids")
    c.set_defaults(func=cmd_select)


def _add_config_parsers(sub) -> None:
    c = _command(sub, "config", help="the configs shipped with budgetseg: list, show one, or start your own from one")
    c.add_argument(
        "action",
        choices=["list", "show", "init"],
        help="list the names; show NAME prints it; init NAME prints it as a template to edit (or writes --out)",
    )
    c.add_argument(
        "name", nargs="?", help="a shipped config: semantic, instance (your own photos), fashion_semantic, ..."
    )
    c.add_argument("--out", type=Path, help="init: write the template to this new file instead of printing it")
    _json_arg(c, "list: the names")
    c.set_defaults(func=cmd_config)

    c = _command(sub, "data", help="build the built-in dataset")
    dsub = c.add_subparsers(dest="dataset", required=True, help="the dataset to build")
    f = _command(dsub, "fashion-scenes", help="Fashion-MNIST items pasted on real photographs")
    f.add_argument("--out", type=Path, required=True, help="folder to build the dataset in")
    _seed_arg(f, "the scenes")
    f.add_argument("--train", type=count, default=2000, help="training-pool images (default 2000)")
    f.add_argument("--val", type=count, default=500, help="val images (default 500)")
    f.add_argument("--size", type=positive_int, default=128, help="image side in pixels (default 128)")
    f.add_argument("--fashion-mnist", type=Path, help="folder of the Fashion-MNIST IDX files")
    f.add_argument("--overwrite", action="store_true", help="replace an earlier fashion-scenes build")
    f.set_defaults(func=cmd_data)


def _add_run_parsers(sub) -> None:
    c = _command(sub, "run", help="the whole pipeline: f_theta -> pseudo-labels -> g_phi -> evaluation")
    _add_run_args(c)
    c.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    _json_arg(c, "results.json")
    c.set_defaults(func=cmd_run)

    c = _command(sub, "train", help="train one network of a run (and what it needs), skipping finished stages")
    _add_run_args(c)
    c.add_argument(
        "--net",
        choices=["annotator", "segmenter"],
        default="annotator",
        help="annotator: f_theta on the strong images; segmenter: g_phi, after f_theta and the pseudo-labels "
        "(default annotator)",
    )
    c.set_defaults(func=cmd_train, resume=True)  # finished stages are skipped: it continues the run

    c = _command(sub, "pseudo-label", help="pseudo-label the unlabeled images of a run with its annotator")
    _add_run_args(c)
    c.set_defaults(func=cmd_pseudo_label, resume=True)

    c = _command(
        sub, "evaluate", help="evaluate a run's networks on val (results.json), or a trained run on other labelled data"
    )
    _add_run_args(c)
    c.add_argument("--val-root", type=Path, help="score a trained run (a run folder) on this labelled dataset instead")
    c.add_argument("--val-format", choices=FORMATS, help="its layout (default: the run's)")
    c.add_argument("--val-split", help="its split (default: the run's val split)")
    _add_tta_args(c)
    _add_stop_arg(c)
    c.add_argument(
        "--stop-thresholds",
        type=stop_thresholds,
        metavar="T,T,...",
        help="instance networks: score each at every one of these stop thresholds (one pass of the network), "
        "e.g. 0.3,0.4,0.5,0.6, to choose the one whose |DiC| is smallest",
    )
    _json_arg(c, "the figures of each network")
    c.set_defaults(func=cmd_evaluate, resume=True)


def _add_experiment_parsers(sub) -> None:
    c = _command(sub, "sweep", help="the pipeline for several N plus the fully-supervised reference, then a report")
    _add_run_args(c, SWEEP_OUT)
    c.add_argument("--n", default="25,50,100,200", help="comma-separated N values (default 25,50,100,200)")
    c.add_argument("--no-reference", action="store_true", help="skip the fully-supervised reference run")
    c.add_argument(
        "--no-controls", action="store_true", help="skip the control: f_theta trained as long as g_phi at each N"
    )
    c.add_argument(
        "--augmented-control",
        action="store_true",
        help="semantic: also the stronger control, that f_theta with colour jitter, cutout and CutMix "
        "(sets controls_augmented)",
    )
    _json_arg(c, "the report", progress=True)
    c.set_defaults(func=cmd_sweep)

    c = _command(
        sub, "compare", help="annotation strategies at equal budgets: masks, boxes, a mix, tags; RSIS vs W-RSIS"
    )
    _add_run_args(c, COMPARE_OUT)
    c.add_argument("--budgets", required=True, help="comma-separated budgets, e.g. 0.3d,0.4d,0.6d")
    c.add_argument(
        "--strategies",
        help="comma-separated, of the task's: semantic masks,tags,boxes,mix; instance rsis,wrsis,boxes,mix "
        "(default: all of them)",
    )
    c.add_argument(
        "--mix-share", type=float, default=0.25, help="share of the budget the mix spends on full masks (default 0.25)"
    )
    _json_arg(c, "the table", progress=True)
    c.set_defaults(func=cmd_compare)


def _add_predict_parser(sub) -> None:
    c = _command(sub, "predict", help="run a trained network on your own images")
    c.add_argument("model", type=Path, metavar="RUN_OR_WEIGHTS", help="run folder or model.pt file")
    c.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="image files or folders of images")
    c.add_argument("--out", type=Path, required=True, help="folder for the predictions")
    c.add_argument("--net", choices=["segmenter", "annotator"], help="network of a run folder (default segmenter)")
    c.add_argument("--batch-size", type=positive_int, default=8, help="images per forward pass (default 8)")
    c.add_argument(
        "--device",
        type=device_name,
        help="where the network runs: cpu, cuda or cuda:K (default cuda where a GPU is visible, else cpu)",
    )
    _add_tta_args(c)
    _add_stop_arg(c)
    _json_arg(c, "a summary")
    c.set_defaults(func=cmd_predict)


def _add_export_parser(sub) -> None:
    c = _command(sub, "export", help="a run's strong labels and pseudo-labels, for correction in an annotation tool")
    c.add_argument("run", type=Path, help="run folder")
    c.add_argument(
        "--to",
        choices=["cvat", "coco", "labelstudio", "html"],
        required=True,
        help="cvat (Segmentation mask 1.1), coco (instances JSON), labelstudio (tasks.json), html (a review page)",
    )
    c.add_argument("--out", type=Path, required=True, help="new export folder (an existing non-empty one is refused)")
    c.add_argument(
        "--image-url-prefix",
        help="labelstudio: prefix of each task's image URL (default /data/local-files/?d=images/: Label Studio's "
        "local files with OUT as document root)",
    )
    c.add_argument(
        "--review",
        type=positive_int,
        metavar="K",
        help="export the strong labels and only the K pseudo-labels with the most errors f_theta expects in them "
        "(review.csv in the export ranks every pseudo-labelled image)",
    )
    _json_arg(c, "a summary")
    c.set_defaults(func=cmd_export)


def _add_results_parsers(sub) -> None:
    c = _command(sub, "advise", help="learning curves from finished runs: which strategy a budget should go to")
    c.add_argument("sources", nargs="+", type=Path, metavar="SOURCE", help="run/sweep folders, report/compare.json")
    c.add_argument("--budget", help="annotation budget, e.g. 1d, 12h (give this or --target)")
    c.add_argument("--target", help="metric to reach, as a fraction (0.35) or a percentage (35%%)")
    _hours_per_day_arg(c)
    c.add_argument("--plot", type=Path, metavar="PNG", help="also plot the curves, their bands and the advice")
    c.add_argument(
        "--noise",
        type=float,
        default=1.0,
        metavar="POINTS",
        help="one run's noise in metric points: a larger N may score this much lower before its runs count as not "
        "monotone, and the bands assume it (default 1; raise it where scores swing between seeds, e.g. AP50 on a "
        "val set of a few dozen images)",
    )
    _add_stats_args(c)  # to price the labels at other action times than the sources paid
    _json_arg(c, "the advice as one object")
    c.set_defaults(func=cmd_advise)

    c = _command(sub, "report", help="table, plot and picture grid from run folders")
    c.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="finished run folders (unfinished ones skipped)")
    c.add_argument("--out", type=Path, help="report folder (default: <parent of the first run>/report)")
    c.add_argument("--title", help="title of the plot and of results.md")
    _json_arg(c, "the report")
    c.set_defaults(func=cmd_report)


def build_parser() -> argparse.ArgumentParser:
    from budgetseg import __version__

    p = Parser(
        prog="budgetseg",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_global_args(sub=False)],
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}", help="print the version")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", help="one of:")
    _add_cost_parsers(sub)
    _add_split_parsers(sub)
    _add_config_parsers(sub)
    _add_run_parsers(sub)
    _add_experiment_parsers(sub)
    _add_predict_parser(sub)
    _add_export_parser(sub)
    _add_results_parsers(sub)
    return p


def _terminate(signum, frame) -> None:
    # SIGTERM (kill, a cluster scheduler) ends the run the way Ctrl-C does: finally blocks release the run
    # folder's lock and delete half-written temp files
    raise KeyboardInterrupt


def _stdout_closed() -> bool:
    """Whether stdout is a pipe whose reader has gone: poll says POLLERR on such a pipe's write end (a flush would
    not tell: the failed write already dropped what was buffered)."""
    import select

    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in poll.poll(0))
    except (OSError, ValueError, AttributeError):  # no file descriptor (a captured stdout), no poll on this system
        return False


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except BudgetsegError as e:
        print(f"budgetseg: error: {e}", file=sys.stderr)
        return 2
    if args.max_pixels is not None:  # through the environment: loader worker processes read it too
        os.environ["BUDGETSEG_MAX_PIXELS"] = str(args.max_pixels)  # data.sample.MAX_PIXELS_ENV
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    from budgetseg.runlog import to_stderr

    try:
        with to_stderr():  # the library's messages (a run's log, a sweep's progress, warnings) on stderr
            args.func(args)
    except BudgetsegError as e:
        if args.debug:
            raise
        print(f"budgetseg: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError as e:
        if args.debug:
            raise
        if not _stdout_closed():  # a pipe of its own (a worker's, a subprocess's) broke: an error
            print(f"budgetseg: error: {e.strerror or e}", file=sys.stderr)
            return 2
        # stdout's reader left (`| head`): nothing to report, and no error from the flush at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # as a process killed by SIGPIPE
    except OSError as e:  # an OS error no reader or writer turned into a BudgetsegError: still one line
        if args.debug:
            raise
        print(f"budgetseg: error: {e.filename + ': ' if e.filename else ''}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("budgetseg: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
