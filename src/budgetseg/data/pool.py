"""The training pool of a run: a labelled (or partly labelled) dataset plus plain folders of unlabeled images.

A practitioner's pool is mostly unlabeled: a folder of photos of any names and sizes, and a few images with
label files. `Pool.load` gives the labels where they exist and an unlabeled sample (`Sample.labeled` False)
elsewhere, so the pipeline never needs a label file for an image it only pseudo-labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from budgetseg.data.boxmask import boxes_only, with_box_masks, with_labels
from budgetseg.data.coco import own_category_ids
from budgetseg.data.labelstudio import uploaded_name
from budgetseg.data.sample import IMAGE_EXTS, Sample, SegDataset, check_id, first_class, quoted, unlabeled_sample
from budgetseg.data.voc import load_image
from budgetseg.errors import BudgetsegError, input_error
from budgetseg.io import atomic_write


class InMemory:
    """One image array as a dataset without labels (id "image"), for a network predicting it in memory."""

    def __init__(self, image: np.ndarray, class_names: list[str]):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise BudgetsegError(f"expected an RGB image, uint8 (H, W, 3), got {image.dtype} {image.shape}")
        self.image, self.class_names = image, list(class_names)
        self.has_instances, self.background, self.ids = False, True, ["image"]

    def __len__(self) -> int:
        return 1

    def has_labels(self, image_id: str) -> bool:
        return False

    def load(self, image_id: str, with_image: bool = True) -> Sample:
        return unlabeled_sample(image_id, self.image)


class ImageFiles:
    """Image files as a dataset without labels; id = file stem (stems must be unique)."""

    def __init__(self, files: list[Path], class_names: list[str] | None = None):
        self.class_names = list(class_names or ["background"])
        self.has_instances = False
        self.background = True
        self.paths: dict[str, Path] = {}
        for f in map(Path, files):
            check_id(f.parent, f.stem, f"file {quoted(f.name)}: ")  # ids name outputs: pseudo-labels, label maps
            if f.stem in self.paths:
                raise input_error(f, f"two images share the name {f.stem!r} ({self.paths[f.stem].name}); rename one")
            self.paths[f.stem] = f
        self.ids = list(self.paths)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Sample:
        return self.load(self.ids[index])

    def image_path(self, image_id: str) -> Path:
        return self.paths[image_id]

    def has_labels(self, image_id: str) -> bool:
        return False

    def load(self, image_id: str, with_image: bool = True) -> Sample:
        return unlabeled_sample(image_id, load_image(self.paths[image_id], with_image))


class ImageFolder(ImageFiles):
    """Every image file directly inside `root` (IMAGE_EXTS, any case; hidden files, such as the ._<name> copies macOS
    leaves, left out), as ImageFiles.

    Files whose resolved path is in `skip` are left out (images another reader already lists).
    """

    def __init__(self, root: str | Path, class_names: list[str] | None = None, skip: set[Path] = frozenset()):
        self.root = Path(root)
        if not self.root.is_dir():
            raise input_error(self.root, "image folder is missing")
        files = [
            f
            for f in sorted(self.root.iterdir())
            if f.suffix.lower() in IMAGE_EXTS and not f.name.startswith(".") and f.is_file() and f.resolve() not in skip
        ]
        super().__init__(files, class_names)


def photo_stem(path: Path) -> str:
    """The stem of an image file's name, Label Studio's upload prefix (8 hex digits and a dash) left out."""
    return Path(uploaded_name(Path(path).name) or path).stem


class Pool:
    """`base`'s images (labels where it has them) plus the images of `folders` whose ids `base` lacks.

    A folder image whose id `base` already has, or whose file name's stem is that of one of `base`'s image files (a
    COCO file from another tool numbers its images; Label Studio prefixes uploads: `c200f83e-a.png` is a.png), is
    the same photo, labelled there: it is skipped and counted in `skipped`. `category_ids`: the COCO category ids of
    classes 1..K where `base` is COCO, else None.
    """

    def __init__(self, base: SegDataset, folders: list[ImageFolder] = ()):
        self.base = base
        self.class_names = base.class_names
        self.category_ids = own_category_ids(base)
        self.has_instances = base.has_instances
        self.background = base.background
        self.folder_of: dict[str, ImageFolder] = {}
        known = set(base.ids) | {photo_stem(base.image_path(i)) for i in base.ids}
        self.skipped = 0
        for folder in folders:
            for i in folder.ids:
                if i in known:
                    self.skipped += 1
                    continue
                known.add(i)
                self.folder_of[i] = folder
        self.ids = list(base.ids) + list(self.folder_of)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Sample:
        return self.load(self.ids[index])

    def image_path(self, image_id: str) -> Path:
        folder = self.folder_of.get(image_id)
        return folder.image_path(image_id) if folder else self.base.image_path(image_id)

    def has_labels(self, image_id: str) -> bool:
        return image_id not in self.folder_of and self.base.has_labels(image_id)

    def load(self, image_id: str, with_image: bool = True) -> Sample:
        if self.has_labels(image_id):
            return self.base.load(image_id, with_image)
        return unlabeled_sample(image_id, load_image(self.image_path(image_id), with_image))


class Relabelled:
    """`base` (a pool) whose labels `load` changes: ids, classes, paths and has_labels pass through."""

    def __init__(self, base: SegDataset):
        self.base = base
        self.class_names, self.ids = base.class_names, base.ids
        self.has_instances, self.background = base.has_instances, base.background

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> Sample:
        return self.load(self.ids[index])

    def image_path(self, image_id: str) -> Path:
        return self.base.image_path(image_id)

    def has_labels(self, image_id: str) -> bool:
        return self.base.has_labels(image_id)

    def load(self, image_id: str, with_image: bool = True) -> Sample:
        return self.base.load(image_id, with_image)


class SimulatedBoxes(Relabelled):
    """`base` with the images `box_ids` labelled as an annotator drawing boxes would have (boxmask.boxes_only):
    the simulation's box images (data.labels.boxes, split/boxes.txt), boxed for `box_classes` only where given
    (names of base's classes; data.labels.box_classes)."""

    def __init__(self, base: SegDataset, box_ids: list[str], box_classes: list[str] | None = None):
        super().__init__(base)
        self.box_ids = set(box_ids)
        self.boxed = None if box_classes is None else {base.class_names.index(c) for c in box_classes}

    def load(self, image_id: str, with_image: bool = True) -> Sample:
        sample = self.base.load(image_id, with_image)
        if image_id not in self.box_ids:
            return sample
        return boxes_only(sample, first_class(self.base), self.boxed)


def as_trained(
    pool: SegDataset, boxes: list[str], box_classes: list[str] | None, method: str, folder: Path
) -> SegDataset:
    """`pool` as f_theta and g_phi train on it: the images `boxes` labelled by boxes alone (simulated from their
    masks: SimulatedBoxes, boxing `box_classes`), and every image known by boxes with the masks `method` (a
    boxmask.ESTIMATES key) estimates for them, kept in `folder` (BoxMasked). The run and its export share it."""
    labelled = SimulatedBoxes(pool, boxes, box_classes) if boxes else pool
    return BoxMasked(labelled, folder, method)


class BoxMasked(Relabelled):
    """`base` (a pool) whose objects known by their box only (Sample.boxes) come with the masks boxmask.py estimates
    for them: what f_theta trains on. Each image's estimate is made once and kept in `folder` (<id>.npz; a run's
    box_masks/), so loader processes, ranks and a resumed run share it: GrabCut takes about a second on a 500 px
    photo. Images without boxes pass through unchanged."""

    def __init__(self, base: SegDataset, folder: Path, method: str = "grabcut"):
        super().__init__(base)
        self.folder, self.method = Path(folder), method  # method: boxmask.ESTIMATES key

    def load(self, image_id: str, with_image: bool = True) -> Sample:
        sample = self.base.load(image_id, with_image)
        if not len(sample.boxes):
            return sample
        path = self.folder / f"{image_id}.npz"
        if not path.is_file():
            est = with_box_masks(
                sample if with_image else self.base.load(image_id), background=self.background, method=self.method
            )
            packed = {
                "semantic": est.semantic,
                "masks": np.packbits(est.instance_masks),
                "classes": est.instance_classes,
            }
            atomic_write(path, lambda f: np.savez_compressed(f, **packed), fsync=False)  # lost: made again
        with np.load(path) as z:
            semantic, classes = z["semantic"], z["classes"]
            masks = np.unpackbits(z["masks"], count=len(classes) * semantic.size).reshape(len(classes), *semantic.shape)
        return with_labels(sample, semantic, masks.astype(bool), classes)
