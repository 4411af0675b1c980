"""Open a dataset by format name: the one entry point the CLI and configs use."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from budgetseg.data.coco import COCODataset
from budgetseg.data.folders import FoldersDataset, open_camvid, open_cvppp, open_folders, open_yolo
from budgetseg.data.labelstudio import LabelStudioDataset
from budgetseg.data.sample import SegDataset
from budgetseg.data.sbd import SBDDataset, voc_train_aug
from budgetseg.data.voc import VOCDataset
from budgetseg.errors import BudgetsegError, input_error

FORMATS = ("voc", "sbd", "coco", "labelstudio", "voc_train_aug", "camvid", "folders", "cvppp", "yolo")


@dataclass(frozen=True)
class LabelOptions:
    """How a label set reads, where its layout does not say (config data.masks, ...; see DataConfig)."""

    masks: str | Path | None = None  # folders: semantic masks
    instance_masks: str | Path | None = None  # folders: instance id maps
    instance_class: str | None = None  # folders: the class of instance masks without semantic ones
    background: bool | None = None  # None: the format's default
    void: tuple[int, ...] | None = None  # None: the format's default (camvid 11, others none)

    @classmethod
    def of(cls, data) -> LabelOptions:
        """The options of a DataConfig."""
        void = None if data.void is None else tuple(data.void)
        return cls(data.masks, data.instance_masks, data.instance_class, data.background, void)


def open_dataset(
    fmt: str,
    root: str | Path,
    split: str | None = None,
    images: str | Path | None = None,
    labels: LabelOptions = LabelOptions(),
) -> SegDataset:
    """A reader for `root` in format `fmt`; `split` defaults to "train" (folders and cvppp: every image); `images`
    is the image folder where it is not the layout's own (voc: JPEGImages/; coco and labelstudio: see below;
    folders: <root>/images/); `labels` what the layout does not say (folders.py for camvid, folders, cvppp, yolo).

    voc_train_aug: the paper's 10,582-image pool (SBD train + val + VOC train, VOC val excluded); `root` holds
    VOCdevkit-style `VOC2012/` (or `voc/`) and SBD's `dataset/` (or `sbd/`) folders; split val is VOC val.
    COCO: `root` is a folder holding annotations/instances_<split>.json (or annotations/<split>.json, or Label
    Studio's result.json), or the JSON file itself. Images are found, in this order, in `images`, <dataset>/<split>/,
    <dataset>/images/<split>/, <dataset>/images/, <dataset>/JPEGImages/, or at a file_name relative to <dataset>
    (Label Studio's `images/...`): the first folder that holds the JSON's first image. <dataset> is the folder
    above `annotations`, or the JSON's own folder.
    labelstudio: `root` is a Label Studio JSON export (or import) file, or a folder holding tasks.json; images are
    in `images`, else <folder>/images/, else the JSON's folder. `split` does not apply.
    """
    root = Path(root)
    if fmt in FOLDER_FORMATS:
        return open_folder_format(fmt, root, split, images, labels)
    if labels.void and fmt != "voc":
        raise BudgetsegError(f"data.void: format {fmt} has no void values to map (its ignore label is 255)")
    if labels.background is False and fmt not in OWN_BACKGROUND:
        raise BudgetsegError(f"data.background false: format {fmt}'s class 0 is its background")
    ds = _open_builtin(fmt, root, split, images, labels.background is not False)
    if fmt == "voc":
        ds.void = labels.void or ()
    return ds


# formats that read a label set without background (data.background false): what budgetseg exports one as
OWN_BACKGROUND = ("voc", "coco", "labelstudio")


def has_background(fmt: str, background: bool | None) -> bool:
    """Whether a label set of format `fmt` has a background: `background` (data.background) where given, else the
    format's default (camvid: none, its 11 classes are all real; every other format: class 0). The one place that
    default lives."""
    return background if background is not None else fmt != "camvid"


def run_background(data) -> bool:
    """has_background of the label set a DataConfig `data` reads."""
    return has_background(data.format, data.background)


def open_split(data, split: str | None) -> SegDataset:
    """Split `split` of the dataset a DataConfig `data` describes."""
    return open_dataset(data.format, data.root, split, images=data.images, labels=LabelOptions.of(data))


FOLDER_FORMATS = ("camvid", "folders", "cvppp", "yolo")


def open_folder_format(fmt: str, root: Path, split: str | None, images, labels: LabelOptions) -> FoldersDataset:
    """The readers of folders.py: camvid, folders, cvppp, yolo."""
    background = has_background(fmt, labels.background)
    if fmt == "camvid":
        return open_camvid(root, split, background, labels.void)
    if fmt == "folders":
        paths = [None if p is None else Path(p) for p in (images, labels.masks, labels.instance_masks)]
        return open_folders(root, split, *paths, labels.instance_class, background, labels.void or ())
    if labels.background is False or labels.void:
        raise BudgetsegError(f"format {fmt}: data.background and data.void do not apply (instance masks)")
    return open_cvppp(root, split) if fmt == "cvppp" else open_yolo(root, split)


def _open_builtin(fmt: str, root: Path, split: str | None, images: str | Path | None, background: bool = True):
    """voc, sbd, voc_train_aug, coco, labelstudio (see open_dataset); background: OWN_BACKGROUND's."""
    if fmt == "voc":
        return VOCDataset(root, split or "train", images=images, background=background)
    if fmt == "sbd":
        return SBDDataset(root, split or "train")
    if fmt == "voc_train_aug":
        voc, sbd = _first_dir(root, ("VOC2012", "voc")), _first_dir(root, ("dataset", "sbd"))
        return voc_train_aug(voc, sbd) if (split or "train") == "train" else VOCDataset(voc, split)
    if fmt == "coco":
        if root.is_dir():
            split = split or "train"
            names = (f"annotations/instances_{split}.json", f"annotations/{split}.json", "result.json")
            found = [root / n for n in names if (root / n).is_file()]
            json_path, dataset = (found[0] if found else root / names[0]), root
        else:
            named = re.fullmatch(r"instances_(.+)\.json", root.name)
            split = split or (named.group(1) if named else None)
            json_path, dataset = root, root.parent.parent if root.parent.name == "annotations" else root.parent
        if images is not None:
            return COCODataset(json_path, images, background)
        candidates = [dataset / split, dataset / "images" / split] if split else []
        return COCODataset(json_path, [*candidates, dataset / "images", dataset / "JPEGImages", dataset], background)
    if fmt == "labelstudio":
        json_path = root / "tasks.json" if root.is_dir() else root
        if images is None:
            images = json_path.parent / "images" if (json_path.parent / "images").is_dir() else json_path.parent
        return LabelStudioDataset(json_path, images, background=background)
    raise BudgetsegError(f"unknown dataset format {fmt!r}; expected one of {', '.join(FORMATS)}")


def _first_dir(root: Path, names: tuple[str, ...]) -> Path:
    for n in names:
        if (root / n).is_dir():
            return root / n
    raise input_error(root, f"voc_train_aug needs one of the folders {' or '.join(names)} here")
