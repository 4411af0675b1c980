"""Dataset statistics: images, classes, classes and objects per image, per-class counts."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from budgetseg.cost import PRESETS, LabelStats, check_stats
from budgetseg.data.sample import SegDataset, first_class, label_counts


@dataclass
class DatasetStats:
    """Counts over one dataset split.

    classes:           object classes in the label set (len(class_names), less the background if it has one)
    classes_per_image: mean number of distinct object classes in the semantic masks (background and 255 excluded)
    objects_per_image: mean number of annotated instances; for semantic-only data (no instance annotations)
                       estimated as the connected components of each class (8-connected), which merges touching
                       objects of one class, so it errs low; `objects_estimated` says so
    per_class_images:    class name -> images whose semantic mask contains it
    per_class_instances: class name -> annotated (or estimated) instances of it
    images counts the labelled images only: unlabeled images of a partly labelled pool are skipped.
    """

    images: int
    classes: int
    classes_per_image: float
    objects_per_image: float
    per_class_images: dict[str, int]
    per_class_instances: dict[str, int]
    objects_estimated: bool = False
    background: bool = True  # False: a dense label set (every pixel a class), priced per image
    box_objects: int = 0  # objects known by their box only (Sample.boxes), counted in the figures above too
    box_images: int = 0  # images labelled by boxes alone (no mask): priced as boxes, not full labels

    def to_dict(self) -> dict:
        return asdict(self)

    def label_stats(self) -> LabelStats:
        """The figures the cost model needs."""
        return LabelStats(self.classes, self.classes_per_image, self.objects_per_image, dense=not self.background)

    def of_classes(self, names: list[str]) -> LabelStats:
        """The cost model's figures counting only the classes `names` (C = their number; k and n their images and
        objects per labelled image): what boxing those classes alone costs."""
        n = max(self.images, 1)
        k = sum(self.per_class_images[c] for c in names) / n
        return LabelStats(len(names), k, sum(self.per_class_instances[c] for c in names) / n)


def components(semantic: np.ndarray, num_classes: int, first: int = 1) -> np.ndarray:
    """int64 (num_classes,): 8-connected components of each object class (ids >= first) of a uint8 (H, W) map."""
    out = np.zeros(num_classes, np.int64)
    for c in np.flatnonzero(label_counts(semantic)[:num_classes]):
        if c >= first:
            out[c] = ndimage.label(semantic == c, structure=np.ones((3, 3)))[1]
    return out


def dataset_stats(ds: SegDataset, ids: list[str] | None = None, progress: bool = False) -> DatasetStats:
    """Statistics of the labelled samples of `ds` (or of `ids`), read without decoding images."""
    num_classes, first = len(ds.class_names), first_class(ds)
    estimated = not ds.has_instances
    images_with = np.zeros(num_classes, dtype=np.int64)
    instances_of = np.zeros(num_classes, dtype=np.int64)
    n = boxes = box_images = 0
    for image_id in tqdm(ds.ids if ids is None else ids, desc="stats", disable=not progress):
        if not ds.has_labels(image_id):
            continue
        sample = ds.load(image_id, with_image=False)
        boxed = np.bincount(sample.box_classes, minlength=num_classes)[:num_classes]
        images_with += (label_counts(sample.semantic)[:num_classes] > 0) | (boxed > 0)
        if estimated:
            instances_of += components(sample.semantic, num_classes, first)
        else:
            instances_of += np.bincount(sample.instance_classes, minlength=num_classes)[:num_classes]
        instances_of += boxed
        boxes += len(sample.boxes)
        box_images += bool(len(sample.boxes)) and not len(sample.instance_masks)
        n += 1
    names = ds.class_names[first:]
    return DatasetStats(
        images=n,
        classes=num_classes - first,
        classes_per_image=float(images_with[first:].sum() / n) if n else 0.0,
        objects_per_image=float(instances_of[first:].sum() / n) if n else 0.0,
        per_class_images={name: int(c) for name, c in zip(names, images_with[first:], strict=True)},
        per_class_instances={name: int(c) for name, c in zip(names, instances_of[first:], strict=True)},
        objects_estimated=estimated,
        background=bool(first),
        box_objects=boxes,
        box_images=box_images,
    )


def cost_statistics(
    measured: DatasetStats | None,
    measured_on: str,
    preset: str | None = None,
    fallback: str = "voc",
    classes: int | None = None,
    classes_per_image: float | None = None,
    objects_per_image: float | None = None,
) -> tuple[LabelStats, dict]:
    """The statistics the cost model prices with, and {"statistics_from", "objects_estimated"} saying what they rest
    on: `preset` when given, else `measured` (on `measured_on`) when it holds a labelled image, else `fallback`;
    then the figures given here override."""
    if preset is None and measured is not None and measured.images:
        base, source = measured.label_stats(), f"measured on {measured_on}"
        estimated = measured.objects_estimated and objects_per_image is None
    else:
        base, source, estimated = PRESETS[preset or fallback], f"preset {preset or fallback}", False
        if preset is None and measured is not None:
            source += " (no labelled image to measure)"
    stats = check_stats(base.override(classes, classes_per_image, objects_per_image))
    if stats != base:
        source += ", with the figures given overriding"
    return stats, {"statistics_from": source, "objects_estimated": estimated}
