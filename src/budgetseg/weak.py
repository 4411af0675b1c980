"""Image-level labels with counts (IL+C): which classes an image holds and how many objects of each.

WeakLabels maps image id -> {class id: count}, class ids of object classes (1..C-1 after a background; 0..C-1
in a label set without one) and counts >= 1 (absent classes are left out; an image with no objects maps to {}).
They come from a dataset's masks (a simulated annotator) or from a file for images without masks:

  CSV   header `image_id,class,count`, one row per (image, class); class is a name or an id; a row with
        count 0 lists an image with nothing of that class (so an empty image can be written as one such row).
  JSON  {"<image id>": {"<class name or id>": count, ...}, ...}

W-RSIS is fed the classes in the order `class_sequence` gives: class id ascending, each repeated count
times. Training presents the ground-truth instances in the same class order, larger objects first within a
class (see budgetseg.instance).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from budgetseg.data.sample import first_class
from budgetseg.data.stats import components
from budgetseg.errors import input_error

WeakLabels = dict[str, dict[int, int]]


def from_dataset(ds, ids: list[str]) -> WeakLabels:
    """IL+C labels derived from the masks of `ids` (what an annotator counting objects would give): the instance
    masks' classes, or for semantic-only data the classes of the semantic masks, counted as their connected
    components (as dataset_stats estimates objects)."""
    out: WeakLabels = {}
    first = first_class(ds)
    for i in ids:
        sample = ds.load(i, with_image=False)
        if ds.has_instances:  # objects known by their box only are objects too
            classes = np.concatenate([sample.instance_classes, sample.box_classes]).astype(np.int64)
            values, counts = np.unique(classes, return_counts=True)
        else:
            per_class = components(sample.semantic, len(ds.class_names), first)
            values = np.flatnonzero(per_class)
            counts = per_class[values]
        out[i] = {int(c): int(n) for c, n in zip(values, counts, strict=True) if c >= first}
    return out


def class_sequence(counts: dict[int, int]) -> list[int]:
    """The classes W-RSIS is given, one per step: class id ascending, each repeated `count` times."""
    return [c for c in sorted(counts) for _ in range(counts[c])]


def _class_id(value: str, class_names: list[str], path: Path, where: str, first: int) -> int:
    text = str(value).strip()
    if text in class_names[first:]:
        return class_names.index(text, first)
    if text.isdigit() and first <= int(text) < len(class_names):
        return int(text)
    known = ", ".join(class_names[first:])
    ids = f"{first}..{len(class_names) - 1}"
    raise input_error(path, f"{where}: unknown class {text!r} (classes: {known}, or ids {ids})")


def _count(value, path: Path, where: str) -> int:
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit():
        raise input_error(path, f"{where}: count must be a whole number >= 0, got {text!r}")
    return int(text)


def read_weak_labels(path: str | Path, class_names: list[str], first: int = 1) -> WeakLabels:
    """Read a CSV or JSON IL+C file (format by suffix: .json, else CSV); one-line errors name the file. `first`: the
    first object class (0 in a label set without background)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise input_error(path, f"cannot read weak-label file ({e.strerror or e})") from None
    out: WeakLabels = {}
    seen: set[tuple[str, int]] = set()

    def add(image_id: str, cls, count, where: str) -> None:
        image_id = str(image_id).strip()
        if not image_id:
            raise input_error(path, f"{where}: empty image id")
        c, n = _class_id(cls, class_names, path, where, first), _count(count, path, where)
        if (image_id, c) in seen:
            raise input_error(path, f"{where}: class {class_names[c]!r} of image {image_id!r} is listed twice")
        seen.add((image_id, c))
        counts = out.setdefault(image_id, {})
        if n:
            counts[c] = n

    if path.suffix.lower() == ".json":
        try:
            d = json.loads(text)
        except ValueError as e:
            raise input_error(path, f"not valid JSON ({e})") from None
        if not isinstance(d, dict):
            raise input_error(path, 'expected an object {"<image id>": {"<class>": count}}')
        for image_id, counts in d.items():
            if not isinstance(counts, dict):
                raise input_error(path, f"image {image_id!r}: expected an object of class -> count")
            out.setdefault(str(image_id).strip(), {})
            for cls, n in counts.items():
                add(image_id, cls, n, f"image {image_id!r}")
        return out

    rows = list(csv.reader(text.splitlines()))
    header = [h.strip().lower() for h in rows[0]] if rows else []
    if header != ["image_id", "class", "count"]:
        raise input_error(path, f"line 1: expected the header image_id,class,count, got {','.join(header)!r}")
    for n, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) != 3:
            raise input_error(path, f"line {n}: expected 3 fields (image_id,class,count), got {len(row)}")
        add(row[0], row[1], row[2], f"line {n}")
    return out


def check_covers(weak: WeakLabels, ids: list[str], path: str | Path) -> None:
    """Error naming the file when some of `ids` (the images W-RSIS must label) have no IL+C label."""
    missing = [i for i in ids if i not in weak]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise input_error(path, f"no IL+C label for image(s) {', '.join(map(repr, missing[:3]))}{more}")


def check_known(weak: WeakLabels, ids: list[str], path: str | Path) -> None:
    """Error naming the file when it labels images the dataset does not hold (a typo, or another folder's file):
    `ids` every id it may name (the whole pool and val: a dataset's full counts file names val images and those
    past data.limit_pool too, which the run does not read)."""
    known = set(ids)
    stray = [i for i in weak if i not in known]
    if stray:
        more = f" and {len(stray) - 3} more" if len(stray) > 3 else ""
        raise input_error(path, f"names no image of the dataset: {', '.join(map(repr, stray[:3]))}{more}")
