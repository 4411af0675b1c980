"""Typed run configuration: YAML in, `--set key=value` overrides, resolved YAML out."""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from budgetseg.cost import CostModel, parse_budget
from budgetseg.errors import BudgetsegError, input_error
from budgetseg.io import write_text

BOX_MASKS = ("grabcut", "box", "inner")  # data.labels.box_masks: the keys of data/boxmask.py ESTIMATES


@dataclass
class LabelMix:
    """The label types of the simulation (data.strong random), drawn with the seed from a fully labelled pool: the
    N = n_strong images with full masks, then `boxes` more with boxes only (from their masks; f_theta and g_phi
    train on box-mask estimates), then `tags` of the unlabeled ones with image-level tags (semantic: their
    pseudo-labels keep only their classes). `full` is another name for n_strong (--set data.labels.full=5).
    `boxes_file`: instead of `boxes`, the ids of the box images (`select --boxes-out`) beside data.strong's file of
    the mask images (`select --out`)."""

    full: int | None = None
    boxes: int = 0
    tags: int = 0
    boxes_file: str | None = None
    # the classes the box images get boxes for (e.g. CamVid's things: car, pedestrian, ...); their other regions
    # are left unknown (ignored) and the box price counts these classes' objects only. null: every class
    box_classes: list[str] | None = None
    # how a box becomes the mask f_theta and g_phi train on (data/boxmask.py ESTIMATES): grabcut (Simple Does It:
    # GrabCut inside the box, an unsure band), box (the filled box: better for touching objects of one colour, such
    # as leaves; docs/results/box-masks) or inner (the box's central half, the rest unsure)
    box_masks: str = "grabcut"


@dataclass
class DataConfig:
    format: str = "voc"  # voc | coco | sbd | labelstudio | camvid | folders | cvppp | yolo (data/readers.py)
    root: str = "data/fashion-scenes"
    # the pool the strong and unlabeled images are drawn from: a split name (<root>/<name>.txt, or the format's
    # own place), a path to a file of ids (one per line), or null for every image of the folder formats
    train_split: str | None = "train"
    val_split: str | None = "val"  # null: no evaluation (a practitioner's pool may have no labelled val set)
    size: int = 128  # training crop side, pixels
    # the working resolution: fit (the longer side is `size`: every image shrunk or grown to the crop, for training
    # and inference alike), native (images as they are), or a number: the shorter side in pixels. Training crops
    # `size` x `size` from images rescaled around it; evaluation, pseudo-labels and predict see the whole image at it
    scale: int | str = "fit"
    # inference on images larger than this side (px, at the working scale; a multiple of 32): the semantic task
    # predicts sliding windows of it, the instance task shrinks the image to it. null: no limit
    window: int | None = None
    # whether class 0 is a background (no object) rather than a class of its own; null: the format's default
    # (true for voc, coco, labelstudio, folders, cvppp, yolo; false for camvid). Without one, every class counts in
    # the cost model's C and k, in image-level labels and in the exports
    background: bool | None = None
    void: list[int] | None = None  # label values read as 255 (ignored), e.g. [11]; null: the format's (camvid 11)
    # format folders: the semantic masks (one class index per pixel) and / or the instance masks (one id per object,
    # 0 background) beside data.images, paired with the images by file stem; the one class of instance-only masks
    masks: str | None = None
    instance_masks: str | None = None
    instance_class: str | None = None
    limit_pool: int | None = None  # use only the first K pool images (tests, quick looks)
    limit_val: int | None = None
    # IL+C file (CSV / JSON, see weak.py) of the pool, for W-RSIS or pseudo.image_labels; None = from its masks
    weak_labels: str | None = None
    # which pool images are strong: random (N drawn with the seed from a fully labelled pool), auto (those with
    # label files; the rest are unlabeled) or the path of a text file of ids (one per line)
    strong: str = "random"
    unlabeled: str | None = None  # a plain folder of images added to the unlabeled pool (no labels needed)
    labels: LabelMix = field(default_factory=LabelMix)  # the simulation's mix of label types
    images: str | None = None  # the image folder where it is not the layout's own (e.g. a CVAT export without images)
    # processes that read and augment images beside the training / inference loop; None = from the machine
    # (dist.loader_workers). Results do not depend on it.
    num_workers: int | None = None


@dataclass
class ModelConfig:
    encoder: str = "tf_efficientnet_lite0"
    encoder_weights: str | None = "imagenet"  # imagenet (offline, shipped) | none | path to a state dict
    # instance task (RSIS) only:
    steps: int = 10  # decoder steps: the most instances one image can yield
    loss_weights: list[float] = field(default_factory=lambda: [1.0, 0.1, 0.5])  # mask, class, stop (RSIS's)
    # pixelwise BCE on matched masks beside the soft IoU: its per-pixel gradient teaches a step to leave out the
    # other objects far faster than soft IoU alone (whose gradient there is area / union^2)
    mask_bce: float = 0.0
    curriculum: float = 0.0  # RSIS curriculum: the step cap grows from 1 to `steps` over this fraction of training
    # RSIS inference (pseudo-labels, evaluation, predict; model.pt keeps it): steps are emitted until the objectness
    # first falls below this. Lower: more objects per image; `budgetseg evaluate RUN --stop-thresholds` measures it
    stop_threshold: float = 0.5
    # W-RSIS: the annotation network is also given each step's class, from the IL+C labels of the images it
    # labels (data.weak_labels); the segmentation network stays a plain RSIS
    class_inputs: bool = False


@dataclass
class TrainConfig:
    iterations: int = 400
    batch_size: int = 8
    optimizer: str = "adamw"  # adamw | sgd (momentum 0.9); poly learning-rate decay either way
    lr: float = 1e-3  # the encoder gets lr * encoder_lr_mult
    encoder_lr_mult: float = 0.1
    weight_decay: float = 1e-4
    epoch_iters: int = 100  # an "epoch" is this many iterations: one checkpoint and one progress bar each
    scale_min: float = 0.5  # random scale range of the augmentation
    scale_max: float = 2.0
    # Segmentation-network options (ignored for the annotation network):
    init: str = "pretrained"  # pretrained: fresh from the encoder weights | annotator: start from f_theta
    strong_fraction: float | None = None  # share of each batch drawn from the strong images; None = uniform
    pseudo_weight: float = 1.0  # loss weight of pseudo-labelled pixels
    pseudo_color_aug: bool = False  # colour jitter + cutout on pseudo-labelled images
    pseudo_cutmix: bool = False  # paste boxes between the pseudo-labelled images of a batch
    # the same two on every image, the strong ones too (semantic task): f_theta's regularisers on few images
    color_aug: bool = False
    cutmix: bool = False
    # color_aug per budget: on as well when the N strong images number at most this (instance task: f_theta's
    # colour jitter pays on few images and costs on many, docs/results/instance_caug/); None = color_aug alone decides
    color_aug_max_n: int | None = None
    # online weak-to-strong consistency (FixMatch / UniMatch; semantic task): the weight of a loss in which the
    # network's own prediction on the weak view of each pseudo-labelled image (its crop before colour jitter,
    # cutout and CutMix), where at least consistency_threshold confident, supervises the strong view; 0 = off
    consistency: float = 0.0
    consistency_threshold: float = 0.95
    # Speed and exactness (results on CPU do not depend on them):
    amp: bool = True  # bf16 autocast on CUDA (training and this network's inference); CPU always runs fp32
    log_every: int = 20  # read the loss (a device sync) every this many iterations
    sync_bn: bool = False  # multi-GPU: BatchNorm statistics over all GPUs' batches (CUDA only)
    # PyTorch's deterministic algorithms (and the cuBLAS workspace they need): a resumed or repeated CUDA run
    # gives the same weights bit for bit, somewhat slower. CPU runs are exact without it.
    deterministic: bool = False


@dataclass
class PseudoConfig:
    threshold: float | None = None  # pixels below this confidence become 255 (ignored)
    class_quantile: float | None = None  # per class, drop this lowest-confidence fraction of its pixels
    tta: bool = False  # average the softmax over the image and its mirror
    scales: list[float] = field(default_factory=lambda: [1.0])  # and over these input scales
    batch_size: int = 16
    # rounds of pseudo-labelling and g_phi training: from round 2 on, the last g_phi relabels the pool and a new
    # g_phi (from it, with segmenter.init annotator) trains on that (ST++'s re-training)
    rounds: int = 1
    # semantic only: the unlabeled images are also bought with image-level class labels (IL), and each image's
    # pseudo-label may hold only its own classes (softmax restricted to them and renormalised): the semantic
    # counterpart of W-RSIS. IL labels come from data.weak_labels (counts ignored) or, in the simulation, the masks
    image_labels: bool = False
    # semantic only: where f_theta's two likeliest classes lie within this probability margin, the pixel's
    # pseudo-label is the pair (pairs/ PNGs) and g_phi is trained to put its mass on either, -log(p_a + p_b),
    # instead of on f_theta's coin flip between similar classes; such pixels are kept whatever class_quantile
    # drops. None = off
    pair_margin: float | None = None
    # semantic only: distribution alignment. Per-class factors on f_theta's probabilities, fitted on up to 64 images
    # spread over the pool so that the class shares of their argmax match the strong labels' pixel shares: a thin
    # or rare class the teacher gives some probability but seldom the most is not erased (semantic/align.py);
    # kept in pseudo/align.json
    align: bool = False


@dataclass
class CostConfig:
    """Overrides of the cost model: statistics (None = measured on the strong labels) and action times (s)."""

    preset: str | None = None  # voc: Pascal VOC's C=20, k=1.5, n=2.8 instead of measured statistics
    classes: int | None = None  # C, background excluded
    classes_per_image: float | None = None  # k
    objects_per_image: float | None = None  # n
    # action times (s), by default the cost model's (budgetseg.cost.CostModel: sources there)
    verify_s: float = CostModel.verify_class_s  # say whether one class is present
    count_s: float = CostModel.count_s  # count the instances of one present class
    box_s: float = CostModel.box_s  # one bounding box (extreme clicking)
    mask_s: float = CostModel.mask_s  # one instance mask (polygon); the strong labels are priced at this
    assisted_mask_s: float = CostModel.assisted_mask_s  # one mask with an assistant (SAM); mask_s: 14 to pay that
    dense_s: float = CostModel.dense_s  # one image of a label set without background painted whole


@dataclass
class RunConfig:
    task: str = "semantic"  # semantic | instance
    seed: int = 0
    n_strong: int | None = 200  # N; None = as many as `budget` buys
    budget: str | None = None  # e.g. 0.5d; used when n_strong is None
    hours_per_day: float = 24.0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    annotator: TrainConfig = field(default_factory=TrainConfig)
    segmenter: TrainConfig = field(default_factory=lambda: TrainConfig(iterations=800))
    pseudo: PseudoConfig = field(default_factory=PseudoConfig)
    cost: CostConfig = field(default_factory=CostConfig)
    # the control for g_phi's gain: f_theta trained on the N strong images for as many iterations as g_phi got in
    # all (g_phi_iterations), in annotator_long/; sweeps turn it on
    controls: bool = False
    # the stronger control (semantic task): the same long f_theta with the pseudo-labelled images' augmentation
    # (color_aug + cutmix) on its strong images, in annotator_long_aug/, for what the pseudo-labels add beyond that
    # augmentation (docs/results/stronger-control/); `sweep --augmented-control` turns it on
    controls_augmented: bool = False


def for_n(t: TrainConfig, n: int) -> TrainConfig:
    """`t` for a run with `n` strong images: color_aug_max_n folded into color_aug (and set to None, so a network
    trained this way shares its annotator cache with one configured color_aug: true)."""
    if t.color_aug_max_n is None:
        return t
    return dataclasses.replace(t, color_aug=t.color_aug or n <= t.color_aug_max_n, color_aug_max_n=None)


def control_configs(cfg: RunConfig) -> dict[str, TrainConfig]:
    """The controls a run trains, by folder name: annotator_long (controls: f_theta trained as long as g_phi in all)
    and annotator_long_aug (controls_augmented: the same with g_phi's augmentation), the latter left out where it
    would be annotator_long again (f_theta is augmented already). `cfg`: resolved for its N (for_n)."""
    long_cfg = dataclasses.replace(cfg.annotator, iterations=g_phi_iterations(cfg))
    nets = {"annotator_long": long_cfg} if cfg.controls else {}
    aug_cfg = dataclasses.replace(long_cfg, color_aug=True, cutmix=True)
    if cfg.controls_augmented and not (cfg.controls and aug_cfg == long_cfg):
        nets["annotator_long_aug"] = aug_cfg
    return nets


def g_phi_iterations(cfg: RunConfig) -> int:
    """Iterations g_phi is trained for in all: its own, plus f_theta's when it starts from f_theta."""
    own = cfg.pseudo.rounds * cfg.segmenter.iterations
    return own + (cfg.annotator.iterations if cfg.segmenter.init == "annotator" else 0)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML / command-line value to the annotated type of field `key`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            if type(None) in args:
                return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except BudgetsegError:
                pass
        raise BudgetsegError(f"config key {key}: cannot use {value!r} as {tp}")
    if origin is list:
        if not isinstance(value, list | tuple):
            raise BudgetsegError(f"config key {key}: expected a list, got {value!r}")
        return [_coerce(v, typing.get_args(tp)[0], key) for v in value]
    try:
        if tp is bool:
            if isinstance(value, str):
                if value.lower() in ("true", "yes", "1", "on"):
                    return True
                if value.lower() in ("false", "no", "0", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if tp is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        if tp in (int, float) and isinstance(value, bool):
            raise ValueError(value)
        return tp(value)
    except (TypeError, ValueError):
        raise BudgetsegError(f"config key {key}: cannot use {value!r} as {tp.__name__}") from None


def merge(base: Any, d: dict, prefix: str = "") -> Any:
    """A copy of dataclass `base` with the (nested) values of `d`, each converted to its field's type.

    Sections merge onto the defaults of their parent, so `segmenter.lr=...` keeps segmenter's own defaults.
    """
    hints = typing.get_type_hints(type(base))
    names = {f.name for f in dataclasses.fields(base)}
    unknown = set(d) - names
    if unknown:
        known = ", ".join(sorted(names))
        raise BudgetsegError(f"unknown config key {prefix}{sorted(unknown)[0]} (known: {known})")
    new = {}
    for k, v in d.items():
        cur = getattr(base, k)
        if dataclasses.is_dataclass(cur):
            if not isinstance(v, dict):
                raise BudgetsegError(f"config key {prefix}{k}: expected a mapping, got {v!r}")
            new[k] = merge(cur, v, prefix + k + ".")
        else:
            new[k] = _coerce(v, hints[k], prefix + k)
    return dataclasses.replace(base, **new)


def apply_overrides(d: dict, overrides: list[str]) -> dict:
    """`a.b=value` strings -> nested dict updates (values parsed as YAML scalars)."""
    for item in overrides:
        if "=" not in item:
            raise BudgetsegError(f"--set {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        node = d
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise BudgetsegError(f"--set {item!r}: {p} is not a section")
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    return d


def load_config(path: str | Path | None, overrides: list[str] = ()) -> RunConfig:
    d: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise input_error(path, "config file is missing")
        try:
            d = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise input_error(path, f"invalid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(d, dict):
            raise input_error(path, "config must be a YAML mapping")
    cfg = resolve_paths(merge(RunConfig(), apply_overrides(d, list(overrides))))
    if cfg.data.labels.full is not None:  # one name in the saved config: n_strong
        labels = dataclasses.replace(cfg.data.labels, full=None)
        cfg = dataclasses.replace(cfg, n_strong=cfg.data.labels.full, data=dataclasses.replace(cfg.data, labels=labels))
    validate(cfg)
    return cfg


def _abs(value: str | None, keep: tuple[str, ...] = ()) -> str | None:
    return value if value is None or value in keep else os.path.abspath(os.path.expanduser(value))


def split_path(split: str | None) -> str | None:
    """A split that is a file path (it names a folder or ends in .txt) made absolute; a split name as it is."""
    if split is None or ("/" not in split and os.sep not in split and not split.endswith(".txt")):
        return split
    return _abs(split)


def resolve_paths(cfg: RunConfig) -> RunConfig:
    """The config with its file and folder paths absolute (relative ones are taken from the working directory),
    so that a run folder's config.yaml works from anywhere."""
    data = dataclasses.replace(
        cfg.data,
        root=_abs(cfg.data.root),
        unlabeled=_abs(cfg.data.unlabeled),
        images=_abs(cfg.data.images),
        masks=_abs(cfg.data.masks),
        instance_masks=_abs(cfg.data.instance_masks),
        train_split=split_path(cfg.data.train_split),
        val_split=split_path(cfg.data.val_split),
        weak_labels=_abs(cfg.data.weak_labels),
        strong=_abs(cfg.data.strong, keep=("random", "auto")),
        labels=dataclasses.replace(cfg.data.labels, boxes_file=_abs(cfg.data.labels.boxes_file)),
    )
    model = dataclasses.replace(cfg.model, encoder_weights=_abs(cfg.model.encoder_weights, keep=("imagenet", "none")))
    return dataclasses.replace(cfg, data=data, model=model)


def config_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested config dicts, e.g. ["n_strong", "pseudo.tta"]."""
    keys = []
    for k in sorted(set(a) | set(b), key=lambda k: (list(a) + list(b)).index(k)):
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and isinstance(y, dict):
            keys += config_diff(x, y, f"{prefix}{k}.")
        elif x != y:
            keys.append(f"{prefix}{k}")
    return keys


# keys that change how fast a run goes, not its results: a run may resume with other values
NEUTRAL_KEYS = ("data.num_workers", "annotator.log_every", "segmenter.log_every")


def saved_config_diff(path: Path, cfg: RunConfig) -> list[str]:
    """Keys in which run folder config `path` differs from `cfg`, after filling the keys it predates with their
    defaults; keys that do not change results (NEUTRAL_KEYS) do not count. ["its layout"] when it is unreadable."""
    try:
        saved = to_dict(merge(RunConfig(), yaml.safe_load(Path(path).read_text()) or {}))
    except (BudgetsegError, yaml.YAMLError, TypeError, AttributeError):
        return ["its layout"]
    return [k for k in config_diff(saved, to_dict(cfg)) if k not in NEUTRAL_KEYS]


TTA_SCALES = (0.75, 1.0, 1.5)  # the default recipe's pseudo-label scales: predict's and evaluate's --tta
MAX_INT = 2**31 - 1  # no count, size or seed of a run comes near it: a larger one is a slip, and fails deep inside
MAX_SIZE = 4096  # data.size (px): the letterbox side a network trains and predicts at


def check_numbers(obj: Any, prefix: str = "") -> None:
    """Every number of a config (its nested sections and lists): floats finite, whole numbers in [0, MAX_INT]. A
    NaN learning rate or 1e20 iterations would otherwise fail inside training, after the run folder is written."""
    for f in dataclasses.fields(obj):
        value, key = getattr(obj, f.name), prefix + f.name
        if dataclasses.is_dataclass(value):
            check_numbers(value, key + ".")
            continue
        for x in value if isinstance(value, list) else [value]:
            if isinstance(x, float) and not math.isfinite(x):
                raise BudgetsegError(f"config key {key}: {x} is not a finite number")
            if isinstance(x, int) and not isinstance(x, bool) and not 0 <= x <= MAX_INT:
                raise BudgetsegError(f"config key {key}: {x} lies outside 0..{MAX_INT}")


def _check_ranges(cfg: RunConfig) -> None:
    """The ranges of the numbers of cfg that validate's other checks leave open."""
    for name in ("annotator", "segmenter"):
        t: TrainConfig = getattr(cfg, name)
        if not (t.lr > 0 and t.encoder_lr_mult >= 0 and t.weight_decay >= 0 and 0 < t.scale_min <= t.scale_max):
            raise BudgetsegError(
                f"config section {name}: need lr > 0, encoder_lr_mult >= 0, weight_decay >= 0 and "
                "0 < scale_min <= scale_max"
            )
        if t.pseudo_weight < 0 or t.consistency < 0 or not 0 <= t.consistency_threshold <= 1:
            raise BudgetsegError(
                f"config section {name}: need pseudo_weight >= 0, consistency >= 0, consistency_threshold in [0, 1]"
            )
    if cfg.data.size > MAX_SIZE:
        raise BudgetsegError(f"config key data.size: {cfg.data.size} px is larger than {MAX_SIZE}")
    if not cfg.pseudo.scales or any(not 0 < s <= 4 for s in cfg.pseudo.scales):
        raise BudgetsegError("config key pseudo.scales: expected scales in (0, 4]")
    if min(cfg.model.loss_weights) < 0 or cfg.model.mask_bce < 0:
        raise BudgetsegError("config: model.loss_weights and model.mask_bce must be >= 0")
    if cfg.pseudo.batch_size < 1:
        raise BudgetsegError("config key pseudo.batch_size must be >= 1")
    if cfg.budget is not None:
        parse_budget(cfg.budget, cfg.hours_per_day)  # a one-line error for a bad budget or hours_per_day
    if not 0 < cfg.hours_per_day <= 24:
        raise BudgetsegError(f"config key hours_per_day must lie in (0, 24], got {cfg.hours_per_day}")


def validate(cfg: RunConfig) -> None:
    """One-line errors for a configuration a run cannot use; load_config calls it, before anything is written."""
    _check_choices(cfg)
    check_numbers(cfg)
    _check_ranges(cfg)


def _check_task_options(cfg: RunConfig) -> None:
    """Options of one task only, and the weak labels each task reads (a file nothing reads is refused)."""
    if cfg.task == "instance":  # options only the semantic task implements
        nets = (("annotator", cfg.annotator), ("segmenter", cfg.segmenter))
        used = [f"{n}.{k}" for n, t in nets for k in ("consistency", "pseudo_cutmix", "cutmix") if getattr(t, k)]
        used += ["controls_augmented"] if cfg.controls_augmented else []
        used += ["pseudo.align"] * cfg.pseudo.align + ["pseudo.pair_margin"] * (cfg.pseudo.pair_margin is not None)
        if used:
            raise BudgetsegError(f"config key {used[0]} works for the semantic task only")
    if cfg.model.class_inputs and cfg.task != "instance":
        raise BudgetsegError("config key model.class_inputs (W-RSIS) needs task: instance")
    if cfg.pseudo.image_labels and cfg.task != "semantic":
        raise BudgetsegError("config key pseudo.image_labels is semantic only (instance: model.class_inputs)")
    if cfg.data.labels.tags and cfg.pseudo.image_labels:
        raise BudgetsegError(
            "config: data.labels.tags tags some unlabeled images, pseudo.image_labels all of them: set one"
        )
    if cfg.data.weak_labels and cfg.task == "semantic" and not cfg.pseudo.image_labels:
        raise BudgetsegError("config key data.weak_labels needs pseudo.image_labels in the semantic task")
    if cfg.data.weak_labels and cfg.task == "instance" and not cfg.model.class_inputs:  # else read by nothing
        raise BudgetsegError("config key data.weak_labels needs model.class_inputs (W-RSIS) in the instance task")


def _check_choices(cfg: RunConfig) -> None:
    """Choices of keys, options that go together or exclude each other, and the ranges of single keys."""
    if cfg.task not in ("semantic", "instance"):
        raise BudgetsegError(f"config key task: expected semantic or instance, got {cfg.task!r}")
    if cfg.n_strong is None and cfg.budget is None:
        raise BudgetsegError("config: set n_strong or budget")
    for name in ("annotator", "segmenter"):
        t: TrainConfig = getattr(cfg, name)
        if t.iterations < 1 or t.batch_size < 1 or t.epoch_iters < 1:
            raise BudgetsegError(f"config key {name}: iterations, batch_size and epoch_iters must be >= 1")
        if t.optimizer not in ("adamw", "sgd"):
            raise BudgetsegError(f"config key {name}.optimizer: expected adamw or sgd, got {t.optimizer!r}")
        if t.init not in ("pretrained", "annotator"):
            raise BudgetsegError(f"config key {name}.init: expected pretrained or annotator, got {t.init!r}")
        if t.log_every < 1:
            raise BudgetsegError(f"config key {name}.log_every must be >= 1")
        if t.strong_fraction is not None and not 0.0 < t.strong_fraction <= 1.0:
            raise BudgetsegError(f"config key {name}.strong_fraction must lie in (0, 1]")
        if t.color_aug_max_n is not None and t.color_aug_max_n < 0:
            raise BudgetsegError(f"config key {name}.color_aug_max_n must be >= 0 (or null: off)")
    if cfg.data.num_workers is not None and cfg.data.num_workers < 0:
        raise BudgetsegError("config key data.num_workers must be >= 0 (or null: from the machine)")
    validate_data(cfg.data, cfg.task)
    _check_task_options(cfg)
    if not 0.0 <= cfg.model.curriculum <= 1.0:
        raise BudgetsegError("config key model.curriculum must lie in [0, 1]")
    check_stop_threshold(cfg.model.stop_threshold, "config key model.stop_threshold")
    if cfg.model.steps < 1 or len(cfg.model.loss_weights) != 3:
        raise BudgetsegError("config: model.steps must be >= 1 and model.loss_weights hold 3 numbers")
    if cfg.pseudo.threshold is not None and not 0.0 <= cfg.pseudo.threshold <= 1.0:
        raise BudgetsegError("config key pseudo.threshold must lie in [0, 1]")
    if cfg.pseudo.pair_margin is not None and not 0.0 < cfg.pseudo.pair_margin <= 1.0:
        raise BudgetsegError("config key pseudo.pair_margin must lie in (0, 1]")
    if cfg.pseudo.rounds < 1:
        raise BudgetsegError("config key pseudo.rounds must be >= 1")
    if cfg.pseudo.class_quantile is not None and not 0.0 <= cfg.pseudo.class_quantile < 1.0:
        raise BudgetsegError("config key pseudo.class_quantile must lie in [0, 1)")
    if cfg.cost.preset not in (None, "voc"):
        raise BudgetsegError(f"config key cost.preset: expected voc or null, got {cfg.cost.preset!r}")
    c = cfg.cost
    times = (c.verify_s, c.count_s, c.box_s, c.mask_s, c.assisted_mask_s, c.dense_s)
    if min(times) < 0 or (cfg.cost.classes is not None and cfg.cost.classes < 1):
        raise BudgetsegError("config section cost: action times must be >= 0 and classes >= 1")


def check_stop_threshold(value: float, what: str) -> None:
    """One-line error unless `value` (what: where it came from, e.g. --stop-threshold) lies in (0, 1): at 0 every
    step is an object, at 1 none is."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < value < 1.0:
        raise BudgetsegError(f"{what} must lie in (0, 1), got {value!r}")


def size_multiple(task: str) -> int:
    """What a network's input side must be a multiple of: its coarsest feature map (RSIS stride 32, DeepLab 16)."""
    return 32 if task == "instance" else 16


def validate_data(data: DataConfig, task: str) -> None:
    """The data section's sizes, working resolution, label values and background, for `task`."""
    multiple = size_multiple(task)
    if data.size < multiple or data.size % multiple:
        raise BudgetsegError(f"config key data.size must be a multiple of {multiple} for the {task} task")
    if isinstance(data.scale, str) and data.scale not in ("fit", "native"):
        raise BudgetsegError(f"config key data.scale: expected fit, native or a shorter side in px, got {data.scale!r}")
    if isinstance(data.scale, int) and not 16 <= data.scale <= 8192:
        raise BudgetsegError(f"config key data.scale: a shorter side of 16 to 8192 px, got {data.scale}")
    if data.window is not None and (data.window < 32 or data.window % 32):
        raise BudgetsegError("config key data.window must be a multiple of 32 (or null: no limit)")
    if any(not 0 <= v <= 255 for v in data.void or []):
        raise BudgetsegError(f"config key data.void: label values lie in 0..255, got {data.void}")
    mix = data.labels
    if (mix.boxes or mix.tags) and data.strong != "random":
        raise BudgetsegError(
            "config keys data.labels.boxes / tags draw label types from a fully labelled pool: they need data.strong "
            "random (real box labels are read from the data files)"
        )
    if mix.boxes_file is not None and (mix.boxes or data.strong in ("random", "auto")):
        raise BudgetsegError(
            "config key data.labels.boxes_file names the box images beside data.strong's file of the mask images "
            "(select --out / --boxes-out): set data.strong to that file, and not data.labels.boxes"
        )
    if mix.box_masks not in BOX_MASKS:
        raise BudgetsegError(f"config key data.labels.box_masks: one of {', '.join(BOX_MASKS)}, got {mix.box_masks!r}")
    if mix.tags and task != "semantic":
        raise BudgetsegError("config key data.labels.tags is semantic only (instance: model.class_inputs, W-RSIS)")
    if task == "instance" and data.background is False:
        raise BudgetsegError("config key data.background: the instance task needs a background (class 0: no object)")


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def save_config(path: str | Path, cfg: RunConfig) -> None:
    write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
