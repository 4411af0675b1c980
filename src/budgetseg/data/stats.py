"""Dataset statistics: images, classes, classes and objects per image, per-class counts."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from tqdm import tqdm

from budgetseg.cost import LabelStats
from budgetseg.data.sample import SegDataset


@dataclass
class DatasetStats:
    """Counts over one dataset split.

    classes:           foreground classes in the label set (len(class_names) - 1), present or not
    classes_per_image: mean number of distinct foreground classes in the semantic masks (0 and 255 excluded)
    objects_per_image: mean number of annotated instances; 0 for a semantic-only dataset (no fallback to
                       connected components, which would merge touching objects of one class)
    per_class_images:    class name -> images whose semantic mask contains it
    per_class_instances: class name -> annotated instances of it
    """

    images: int
    classes: int
    classes_per_image: float
    objects_per_image: float
    per_class_images: dict[str, int]
    per_class_instances: dict[str, int]

    def to_dict(self) -> dict:
        return asdict(self)

    def label_stats(self) -> LabelStats:
        """The figures the cost model needs."""
        return LabelStats(self.classes, self.classes_per_image, self.objects_per_image)


def dataset_stats(ds: SegDataset, progress: bool = False) -> DatasetStats:
    """Statistics of every sample of `ds`, read without decoding images."""
    num_classes = len(ds.class_names)
    images_with = np.zeros(num_classes, dtype=np.int64)
    instances_of = np.zeros(num_classes, dtype=np.int64)
    total_instances = 0
    for image_id in tqdm(ds.ids, desc="stats", disable=not progress):
        sample = ds.load(image_id, with_image=False)
        present = np.bincount(sample.semantic.ravel(), minlength=256)[:num_classes] > 0
        images_with += present
        instances_of += np.bincount(sample.instance_classes, minlength=num_classes)[:num_classes]
        total_instances += len(sample.instance_classes)
    n = len(ds.ids)
    names = ds.class_names[1:]
    return DatasetStats(
        images=n,
        classes=num_classes - 1,
        classes_per_image=float(images_with[1:].sum() / n) if n else 0.0,
        objects_per_image=total_instances / n if n else 0.0,
        per_class_images={name: int(c) for name, c in zip(names, images_with[1:], strict=True)},
        per_class_instances={name: int(c) for name, c in zip(names, instances_of[1:], strict=True)},
    )
