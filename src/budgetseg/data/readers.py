"""Open a dataset by format name: the one entry point the CLI and configs use."""

from __future__ import annotations

import re
from pathlib import Path

from budgetseg.data.coco import COCODataset
from budgetseg.data.sample import SegDataset
from budgetseg.data.sbd import SBDDataset
from budgetseg.data.voc import VOCDataset
from budgetseg.errors import BudgetsegError

FORMATS = ("voc", "sbd", "coco")


def open_dataset(fmt: str, root: str | Path, split: str | None = None) -> SegDataset:
    """A reader for `root` in format `fmt` ("voc", "sbd" or "coco"); `split` defaults to "train".

    COCO: `root` is a folder holding annotations/instances_<split>.json, or the JSON file itself. Images are
    in <dataset>/<split>/ (the COCO layout) or, failing that, <dataset>/JPEGImages/ (VOC-style builds that also
    ship COCO JSON), where <dataset> is the folder above `annotations`. A JSON file outside an `annotations`
    folder has its images next to it.
    """
    root = Path(root)
    if fmt == "voc":
        return VOCDataset(root, split or "train")
    if fmt == "sbd":
        return SBDDataset(root, split or "train")
    if fmt == "coco":
        if root.is_dir():
            split = split or "train"
            return COCODataset(root / "annotations" / f"instances_{split}.json", coco_image_dir(root, split))
        named = re.fullmatch(r"instances_(.+)\.json", root.name)
        if root.parent.name == "annotations" and (split or named):
            return COCODataset(root, coco_image_dir(root.parent.parent, split or named.group(1)))
        return COCODataset(root, root.parent)
    raise BudgetsegError(f"unknown dataset format {fmt!r}; expected one of {', '.join(FORMATS)}")


def coco_image_dir(dataset: Path, split: str) -> Path:
    """<dataset>/<split>/ when it exists, else <dataset>/JPEGImages/ when that exists, else <dataset>/<split>/."""
    for candidate in (dataset / split, dataset / "JPEGImages"):
        if candidate.is_dir():
            return candidate
    return dataset / split
