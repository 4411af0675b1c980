"""Pascal VOC 2012 segmentation layout: JPEGImages, SegmentationClass, SegmentationObject, ImageSets."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from budgetseg.data.boxmask import boxes_mask
from budgetseg.data.labelmap import read_color_label_png, read_labelmap, voc_colours
from budgetseg.data.sample import (
    IGNORE,
    IMAGE_EXTS,
    Sample,
    apply_void,
    check_class_names,
    check_id,
    empty_instances,
    image_size,
    label_counts,
    read_image,
    read_label_png,
)
from budgetseg.data.vocxml import read_voc_boxes
from budgetseg.errors import input_error
from budgetseg.splits import read_ids

VOC_CLASSES = [
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
]


def read_split_file(path: Path) -> list[str]:
    """Image ids of a split file (see splits.read_ids)."""
    return read_ids(path)


def read_class_names(path: Path, background: bool = True) -> list[str]:
    """One class name per line, background first where the label set has one (blank lines skipped)."""
    try:
        names = [s.strip() for s in path.read_text(encoding="utf-8-sig").splitlines() if s.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise input_error(path, f"cannot read class names ({e.__class__.__name__}: {e})") from None
    check_class_names(path, names, background)
    return names


def check_size(path: Path, got: tuple[int, ...], image_path: Path, want: tuple[int, int], what: str) -> None:
    """Error naming the mask file `path` when its (H, W) differs from the image's."""
    if tuple(got) != tuple(want):
        problem = f"{what} is {got[1]}x{got[0]} (WxH) but image {image_path.name} is {want[1]}x{want[0]}"
        raise input_error(path, problem)


def check_class_ids(path: Path, semantic: np.ndarray, num_names: int) -> None:
    """Error naming `path` when a label is neither a class index (< num_names) nor IGNORE."""
    present = np.flatnonzero(label_counts(semantic))
    bad = [int(c) for c in present if c >= num_names and c != IGNORE]
    if bad:
        raise input_error(path, f"class id(s) {bad} outside the label set 0..{num_names - 1} ({IGNORE} = ignore)")


def load_image(path: Path, with_image: bool) -> np.ndarray:
    """uint8 (H, W, 3), or a (H, W, 0) placeholder whose size comes from the file header."""
    if with_image:
        return read_image(path)
    h, w = image_size(path)
    return np.zeros((h, w, 0), dtype=np.uint8)


def instances_from_object_map(objects: np.ndarray, semantic: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split a VOC object map into instances.

    objects:  uint8 (H, W); 0 = background, 1..K = instance index, 255 = ignore
    semantic: uint8 (H, W) class ids
    Returns bool (K', H, W) masks and int64 (K',) classes, in ascending instance index. Each instance takes
    the most frequent foreground class under it (ties -> lowest id); one with no foreground pixel is skipped.
    """
    masks, classes = [], []
    for k in np.flatnonzero(label_counts(objects)):
        if k == 0 or k == IGNORE:
            continue
        mask = objects == k
        votes = label_counts(semantic[mask])
        votes[0] = votes[IGNORE] = 0
        if votes.sum() == 0:
            continue
        masks.append(mask)
        classes.append(int(votes.argmax()))
    if not masks:
        return empty_instances(*objects.shape)
    return np.stack(masks), np.asarray(classes, dtype=np.int64)


class VOCDataset:
    """Pascal VOC layout under `root`.

    Class names: `class_names`, else `root/classes.txt` (one per line, background first), else the labels of
    CVAT's `root/labelmap.txt`, else VOC_CLASSES. With a labelmap.txt, label PNGs may also be RGB in its colours
    (CVAT exports them so; its `ignore` label reads as 255) and object PNGs RGB in VOC's colours. background=False
    (a label set without background): the label map's background, CVAT's black, is unlabelled (read as 255) and its
    other labels are classes 0..C-1, as budgetseg's export of such a run writes them.
    Ids: ImageSets/Segmentation/<split>.txt; without an ImageSets/Segmentation folder, every image in JPEGImages/
    (or in `images`).
    Images may be .jpg or any of IMAGE_EXTS. Instances come from SegmentationObject; without that folder the
    dataset is semantic-only (no instances). In a detection layout (Annotations/ and no SegmentationClass/), an
    image is labelled by the boxes of its Annotations/<id>.xml (vocxml.py; Sample.boxes). An image without labels
    (`has_labels` False) is unlabelled; loading its labels is an error.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        class_names: list[str] | None = None,
        images: str | Path | None = None,
        background: bool = True,
    ):
        """images: the image folder, when not root/JPEGImages (CVAT exports masks without images by default)."""
        self.root = Path(root)
        self.split = split
        self.image_dir = Path(images) if images is not None else self.root / "JPEGImages"
        if not self.image_dir.is_dir() and (self.root / "SegmentationClass").is_dir():
            hint = " (an export without images? give the images' folder: --images DIR, or data.images in a config)"
            hint = "" if images is not None else hint
            raise input_error(self.image_dir, "image folder is missing" + hint)
        names_file, labelmap = self.root / "classes.txt", self.root / "labelmap.txt"
        mapped, self.colours = read_labelmap(labelmap) if labelmap.is_file() else (None, None)
        if mapped is not None and not background:
            mapped = mapped[1:]  # its background (read_labelmap's first) is the unlabelled colour
        if class_names is not None:
            check_class_names("class_names", list(class_names), background)
            self.class_names = list(class_names)
        elif names_file.is_file():
            self.class_names = read_class_names(names_file, background)
        else:
            self.class_names = mapped or list(VOC_CLASSES)
        self.detection = (self.root / "Annotations").is_dir() and not (self.root / "SegmentationClass").is_dir()
        self.has_instances = (self.root / "SegmentationObject").is_dir() or self.detection  # boxes count objects
        self.background = background
        self.void: tuple[int, ...] = ()  # label values read as 255 (data.void)
        self._images: dict[str, Path] | None = None  # stem -> file, listed on first need
        sets = self.root / "ImageSets" / "Segmentation"
        if sets.is_dir() or not self.image_dir.is_dir():
            self.ids = read_split_file(sets / f"{split}.txt")
        else:  # ids from file names, checked as ids read from files are
            self.ids = [check_id(self.image_dir, i) for i in sorted(self._image_index())]

    def _image_index(self) -> dict[str, Path]:
        if self._images is None:
            files = sorted(self.image_dir.iterdir()) if self.image_dir.is_dir() else []
            self._images = {}
            for f in files:  # hidden files (macOS's ._<name> copies) are no images
                if f.suffix.lower() in IMAGE_EXTS and not f.name.startswith(".") and f.stem not in self._images:
                    self._images[f.stem] = f
        return self._images

    def image_path(self, image_id: str) -> Path:
        """JPEGImages/<id>.jpg, else the file of that stem with another image extension (the .jpg path if none)."""
        path = self.image_dir / f"{image_id}.jpg"
        if path.is_file():
            return path
        return self._image_index().get(image_id, path)

    def has_labels(self, image_id: str) -> bool:
        if not (self.root / "SegmentationClass" / f"{image_id}.png").is_file():
            return self.detection and self.xml_path(image_id).is_file()
        return not self.has_instances or (self.root / "SegmentationObject" / f"{image_id}.png").is_file()

    def xml_path(self, image_id: str) -> Path:
        """Annotations/<id>.xml: the image's detection boxes, read in a detection layout (Annotations/ without
        SegmentationClass/: Pascal VOC's own folder, which has both, keeps its images without masks unlabelled)."""
        return self.root / "Annotations" / f"{image_id}.xml"

    def load_boxes(self, image_id: str, image: np.ndarray) -> Sample:
        """The sample of an image labelled by boxes only: IGNORE inside every box (difficult ones included), 0
        elsewhere; the boxes in Sample.boxes."""
        size = image.shape[:2]
        boxes, classes, ignored = read_voc_boxes(self.xml_path(image_id), self.class_names, size, self.background)
        void = boxes_mask(ignored, size)
        semantic = np.where(boxes_mask(boxes, size) | void, IGNORE, 0).astype(np.uint8)
        return Sample(image_id, image, semantic, *empty_instances(*size), boxes=boxes, box_classes=classes, void=void)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Sample:
        return self.load(self.ids[index])

    def _read_label(self, path: Path, colours: dict) -> np.ndarray:
        """Index PNG; with a labelmap.txt, RGB PNGs in `colours` too (CVAT's export)."""
        return read_color_label_png(path, colours) if self.colours else read_label_png(path)

    def load(self, image_id: str, with_image: bool = True) -> Sample:
        """The sample of `image_id` (any id with files under root, not only this split's)."""
        image_path = self.image_path(image_id)
        image = load_image(image_path, with_image)
        size = image.shape[:2]
        class_path = self.root / "SegmentationClass" / f"{image_id}.png"
        if self.detection and not class_path.is_file() and self.xml_path(image_id).is_file():
            return self.load_boxes(image_id, image)
        semantic = self._read_label(class_path, self.colours)
        if self.colours and not self.background:  # the label map's background is unlabelled; its classes from 0
            semantic = np.where((semantic == 0) | (semantic == IGNORE), IGNORE, semantic - 1).astype(np.uint8)
        semantic = apply_void(semantic, self.void)
        check_size(class_path, semantic.shape, image_path, size, "class mask")
        check_class_ids(class_path, semantic, len(self.class_names))

        object_dir = self.root / "SegmentationObject"
        if self.has_instances:
            object_path = object_dir / f"{image_id}.png"
            objects = self._read_label(object_path, voc_colours(IGNORE))
            check_size(object_path, objects.shape, image_path, size, "object mask")
            masks, classes = instances_from_object_map(objects, semantic)
        else:
            masks, classes = empty_instances(*size)
        return Sample(image_id, image, semantic, masks, classes)
