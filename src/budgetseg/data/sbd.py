"""Semantic Boundaries Dataset (Hariharan et al. 2011) and the VOC+SBD `train_aug` pool of 10,582 images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from budgetseg.data.sample import IGNORE, Sample, SegDataset, empty_instances, label_counts
from budgetseg.data.voc import (
    VOC_CLASSES,
    VOCDataset,
    check_class_ids,
    check_size,
    load_image,
    read_split_file,
)
from budgetseg.errors import input_error


def read_mat_struct(path: Path, name: str, fields: tuple[str, ...]):
    """The MATLAB struct `name` of a .mat file, with `fields` checked present; one-line errors otherwise."""
    if not path.is_file():
        raise input_error(path, "annotation file is missing")
    try:
        # No squeeze_me: it would turn a (1, W) mask into (W,) and one category into a scalar.
        mat = scipy.io.loadmat(path, struct_as_record=False)
    except Exception as e:  # scipy raises many types (ValueError, OSError, IndexError, ...) on bad bytes
        raise input_error(path, f"corrupt .mat file ({e.__class__.__name__}: {e})") from None
    value = mat.get(name)
    if not isinstance(value, np.ndarray) or value.dtype != object or value.size != 1:
        raise input_error(path, f"no MATLAB struct {name!r}")
    struct = value.flat[0]
    missing = [f for f in fields if not hasattr(struct, f)]
    if missing:
        raise input_error(path, f"struct {name!r} lacks field(s) {missing}")
    return struct


def mat_mask(path: Path, struct, field: str) -> np.ndarray:
    """uint8 (H, W) from an integer struct field; values must fit in 0..255."""
    arr = np.asarray(getattr(struct, field))
    if arr.ndim != 2 or arr.dtype.kind not in "uib":
        raise input_error(path, f"{field} must be a 2-D integer array, got {arr.dtype} {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise input_error(path, f"{field} values must lie in 0..255, got {arr.min()}..{arr.max()}")
    return arr.astype(np.uint8)


class SBDDataset:
    """SBD under `root`: img/<id>.jpg, cls/<id>.mat (GTcls), inst/<id>.mat (GTinst), <split>.txt.

    Without an `inst` folder the dataset is semantic-only (no instances).
    """

    def __init__(self, root: str | Path, split: str = "train"):
        self.root = Path(root)
        self.split = split
        self.class_names = list(VOC_CLASSES)
        self.ids = read_split_file(self.root / f"{split}.txt")
        self.has_instances = (self.root / "inst").is_dir()
        self.background = True

    def image_path(self, image_id: str) -> Path:
        return self.root / "img" / f"{image_id}.jpg"

    def has_labels(self, image_id: str) -> bool:
        return (self.root / "cls" / f"{image_id}.mat").is_file()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Sample:
        return self.load(self.ids[index])

    def load(self, image_id: str, with_image: bool = True) -> Sample:
        image_path = self.image_path(image_id)
        image = load_image(image_path, with_image)
        size = image.shape[:2]
        cls_path = self.root / "cls" / f"{image_id}.mat"
        semantic = mat_mask(cls_path, read_mat_struct(cls_path, "GTcls", ("Segmentation",)), "Segmentation")
        check_size(cls_path, semantic.shape, image_path, size, "class mask")
        check_class_ids(cls_path, semantic, len(self.class_names))

        inst_dir = self.root / "inst"
        if self.has_instances:
            masks, classes = self._instances(inst_dir / f"{image_id}.mat", image_path, size)
        else:
            masks, classes = empty_instances(*size)
        return Sample(image_id, image, semantic, masks, classes)

    def _instances(self, path: Path, image_path: Path, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """bool (K, H, W) masks and int64 (K,) classes; index k of the map has class Categories[k-1]."""
        struct = read_mat_struct(path, "GTinst", ("Segmentation", "Categories"))
        index_map = mat_mask(path, struct, "Segmentation")
        check_size(path, index_map.shape, image_path, size, "instance mask")
        categories = np.asarray(struct.Categories).ravel()
        if categories.dtype.kind not in "uif" or np.any(categories != np.round(categories)):
            raise input_error(path, f"Categories must be integer class ids, got {categories.dtype}")
        categories = categories.astype(np.int64)
        bad = [int(c) for c in categories if not 1 <= c < len(self.class_names)]
        if bad:
            raise input_error(path, f"Categories {bad} outside the classes 1..{len(self.class_names) - 1}")
        present = np.flatnonzero(label_counts(index_map))
        present = present[(present != 0) & (present != IGNORE)]
        if present.size and present.max() > categories.size:
            raise input_error(path, f"instance index {present.max()} but Categories has only {categories.size} entries")
        if not present.size:
            return empty_instances(*size)
        # Indices listed in Categories but absent from the map would be empty masks: drop them.
        masks = np.stack([index_map == k for k in present])
        return masks, categories[present - 1]


class UnionDataset:
    """Samples from several readers sharing one label set; `source[id]` is the reader that loads `id`."""

    def __init__(self, class_names: list[str], source: dict[str, SegDataset]):
        self.class_names = list(class_names)
        self.source = source
        self.ids = sorted(source)
        self.has_instances = all(s.has_instances for s in set(source.values()))
        self.background = True

    def image_path(self, image_id: str) -> Path:
        return self.source[image_id].image_path(image_id)

    def has_labels(self, image_id: str) -> bool:
        return self.source[image_id].has_labels(image_id)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Sample:
        return self.load(self.ids[index])

    def load(self, image_id: str, with_image: bool = True) -> Sample:
        if image_id not in self.source:
            raise KeyError(image_id)
        return self.source[image_id].load(image_id, with_image)


def voc_train_aug(voc_root: str | Path, sbd_root: str | Path) -> UnionDataset:
    """The `train_aug` pool: (SBD train | SBD val | VOC train) - VOC val, ids sorted (10,582 on real data).

    An id is read from VOC when it is in VOC train or VOC has SegmentationClass/<id>.png (the finer
    annotation, with ignore borders), else from SBD.
    """
    voc = VOCDataset(voc_root, "train")
    if voc.class_names != VOC_CLASSES:
        raise input_error(voc.root, "train_aug needs the 21 Pascal VOC classes (SBD's label set)")
    voc_val = set(read_split_file(voc.root / "ImageSets" / "Segmentation" / "val.txt"))
    sbd = SBDDataset(sbd_root, "train")
    sbd_val_ids = read_split_file(sbd.root / "val.txt")
    pool = (set(sbd.ids) | set(sbd_val_ids) | set(voc.ids)) - voc_val
    source: dict[str, SegDataset] = {}
    voc_train = set(voc.ids)
    for image_id in pool:
        has_voc = image_id in voc_train or (voc.root / "SegmentationClass" / f"{image_id}.png").is_file()
        source[image_id] = voc if has_voc else sbd
    return UnionDataset(VOC_CLASSES, source)
