"""Open a dataset by format name: the one entry point the CLI and configs use."""

from __future__ import annotations

import re
from pathlib import Path

from budgetseg.data.coco import COCODataset
from budgetseg.data.labelstudio import LabelStudioDataset
from budgetseg.data.sample import SegDataset
from budgetseg.data.sbd import SBDDataset, voc_train_aug
from budgetseg.data.voc import VOCDataset
from budgetseg.errors import BudgetsegError, input_error

FORMATS = ("voc", "sbd", "coco", "labelstudio", "voc_train_aug")


def open_dataset(fmt: str, root: str | Path, split: str | None = None, images: str | Path | None = None) -> SegDataset:
    """A reader for `root` in format `fmt`; `split` defaults to "train"; `images` is the image folder where it is
    not the layout's own (voc: JPEGImages/; coco and labelstudio: see below).

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
    if fmt == "voc":
        return VOCDataset(root, split or "train", images=images)
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
            return COCODataset(json_path, images)
        candidates = [dataset / split, dataset / "images" / split] if split else []
        return COCODataset(json_path, [*candidates, dataset / "images", dataset / "JPEGImages", dataset])
    if fmt == "labelstudio":
        json_path = root / "tasks.json" if root.is_dir() else root
        if images is None:
            images = json_path.parent / "images" if (json_path.parent / "images").is_dir() else json_path.parent
        return LabelStudioDataset(json_path, images)
    raise BudgetsegError(f"unknown dataset format {fmt!r}; expected one of {', '.join(FORMATS)}")


def _first_dir(root: Path, names: tuple[str, ...]) -> Path:
    for n in names:
        if (root / n).is_dir():
            return root / n
    raise input_error(root, f"voc_train_aug needs one of the folders {' or '.join(names)} here")
