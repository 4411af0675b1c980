"""Images and label files paired by file stem, the layouts most people's data is in:

  folders  data.images/ + data.masks/ (one class index per pixel) and / or data.instance_masks/ (one id per
           object, 0 background: CVPPP, Penn-Fudan, most microscopy sets), any image extension
  camvid   SegNet's CamVid: <split>/, <split>annot/, <split>.txt (image / label pairs by SegNet's own absolute
           paths: matched by file name); 11 classes, no background, void 11
  cvppp    the CVPPP leaf challenge's folders as they ship: plantNNN_rgb.png beside plantNNN_label.png (a palette PNG,
           one index per leaf); one class, leaf
  yolo     Ultralytics / Roboflow / CVAT segmentation labels: images/<split>/, labels/<split>/<stem>.txt with one
           object a line (class index, then the normalised x y pairs of its polygon, or a detection box:
           cx cy w h, an object known by its box only); names from data.yaml

An image without a label file is unlabeled (a pool's images to pseudo-label); a yolo label file that is empty is
an image with no object. A label file without an image is left out. A split is a name (<root>/<name>.txt; camvid:
its own; yolo: the images/<name>/ folder), a path to a text file of ids (one stem per line; lines that name image
files count by their stem), or null: every image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw, UnidentifiedImageError

from budgetseg.data.boxmask import boxes_mask
from budgetseg.data.sample import (
    IGNORE,
    IMAGE_EXTS,
    Sample,
    apply_void,
    check_class_names,
    check_id,
    empty_instances,
    read_label_png,
)
from budgetseg.data.voc import check_class_ids, check_size, load_image, read_class_names
from budgetseg.errors import input_error
from budgetseg.splits import read_ids

CAMVID_CLASSES = [
    "sky",
    "building",
    "pole",
    "road",
    "pavement",
    "tree",
    "signsymbol",
    "fence",
    "car",
    "pedestrian",
    "bicyclist",
]
CAMVID_VOID = 11
MAX_INSTANCES = IGNORE - 1  # instance targets are uint8 with 0 background and 255 ignore


def index_files(folder: Path, suffix: str = "", exts: tuple[str, ...] = IMAGE_EXTS) -> dict[str, Path]:
    """stem -> file for the files directly in `folder` whose name ends in `suffix` + one of `exts` (any case);
    the stem is the name without `suffix` and extension. Hidden files are left out."""
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    for f in sorted(folder.iterdir()):
        stem = f.stem
        if f.name.startswith(".") or f.suffix.lower() not in exts or not stem.endswith(suffix) or not f.is_file():
            continue
        stem = check_id(f, stem[: len(stem) - len(suffix)] if suffix else stem)
        if stem in found:
            raise input_error(f, f"two files share the name {stem!r} ({found[stem].name}); rename one")
        found[stem] = f
    return found


def split_file(root: Path, split: str) -> Path:
    """The file of split `split`: itself where it is a path (has a folder or ends in .txt), else <root>/<split>.txt."""
    if "/" in split or split.endswith(".txt"):
        return Path(split)
    return root / f"{split}.txt"


def listed_ids(path: Path) -> list[str]:
    """Ids of a split file: one a line; a line naming image files (SegNet's `train/a.png trainannot/a.png`) counts
    as the first file's stem."""
    return read_ids(path, key=listed_stem)


def listed_stem(line: str) -> str:
    """The id a split file's line names: the stem of its first file where it names image files, else the line."""
    first = line.split()[0]
    return Path(first).stem if Path(first).suffix.lower() in IMAGE_EXTS else line


def split_ids(root: Path, split: str | None, images: dict[str, Path]) -> list[str]:
    """The ids of `split` (every image, sorted, where None), each checked to have an image. A line naming an image
    file by its own name names that image's id (CVPPP's plant001_rgb.png is plant001)."""
    if split is None:
        return sorted(images)
    path = split_file(root, split)
    by_file = {f.stem: i for i, f in images.items()}
    ids = [i if i in images else by_file.get(i, i) for i in listed_ids(path)]
    missing = [i for i in ids if i not in images]
    if missing:
        where = next(iter(images.values())).parent if images else root
        raise input_error(path, f"{len(missing)} listed id(s) have no image in {where}, e.g. {missing[0]!r}")
    return ids


def read_id_png(path: Path) -> np.ndarray:
    """int32 (H, W) of an index PNG (palette, 8- or 16-bit grayscale): one id per object, 0 background."""
    if not path.is_file():
        raise input_error(path, "label file is missing")
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "I", "I;16", "I;16B", "I;16L"):
                raise input_error(path, f"instance PNG must hold indices (palette or grayscale), got mode {im.mode}")
            return np.asarray(im).astype(np.int32)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise input_error(path, f"corrupt label PNG ({e.__class__.__name__}: {e})") from None


def instances_from_ids(path: Path, ids: np.ndarray, semantic: np.ndarray | None, cls: int) -> tuple:
    """bool (K, H, W) masks and int64 (K,) classes of an id map (0 background, 1.. one object each), in ascending
    id; each takes the most frequent class of `semantic` under it (none there: skipped), or `cls` without one."""
    present = [int(k) for k in np.unique(ids) if k > 0]
    if len(present) > MAX_INSTANCES:
        raise input_error(path, f"{len(present)} objects in one image; at most {MAX_INSTANCES} fit")
    masks, classes = [], []
    for k in present:
        mask = ids == k
        if semantic is not None:
            votes = np.bincount(semantic[mask], minlength=256)
            votes[IGNORE] = 0
            if not votes.sum():
                continue
            c = int(votes.argmax())
        masks.append(mask)
        classes.append(c if semantic is not None else cls)
    if not masks:
        return empty_instances(*ids.shape)
    return np.stack(masks), np.asarray(classes, np.int64)


class FoldersDataset:
    """Images of `images` (stem -> file) with label files by stem: semantic masks (`semantic`: stem -> index PNG)
    and / or instance id maps (`instances`: stem -> id PNG, objects of class `instance_class`, 1, where there is no
    semantic mask to vote). Ids: `ids`. See the module docstring for the layouts that build it."""

    def __init__(
        self,
        images: dict[str, Path],
        ids: list[str],
        class_names: list[str],
        *,
        semantic: dict[str, Path] | None = None,
        instances: dict[str, Path] | None = None,
        background: bool = True,
        void: tuple[int, ...] = (),
    ):
        check_class_names("class_names", class_names, background)
        self.images, self.ids, self.class_names = images, list(ids), list(class_names)
        self.semantic, self.instances = semantic or {}, instances
        self.has_instances = instances is not None
        self.background, self.void = background, tuple(void)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Sample:
        return self.load(self.ids[index])

    def image_path(self, image_id: str) -> Path:
        return self.images[image_id]

    def has_labels(self, image_id: str) -> bool:
        return image_id in self.semantic or (self.instances is not None and image_id in self.instances)

    def _semantic(self, image_id: str, size: tuple[int, int]) -> np.ndarray | None:
        path = self.semantic.get(image_id)
        if path is None:
            return None
        semantic = apply_void(read_label_png(path), self.void)
        check_size(path, semantic.shape, self.image_path(image_id), size, "mask")
        check_class_ids(path, semantic, len(self.class_names))
        return semantic

    def labels(self, image_id: str, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """uint8 (H, W) semantic map, bool (K, H, W) instance masks, int64 (K,) classes of a labelled image."""
        if not self.has_labels(image_id):
            raise input_error(self.image_path(image_id), "has no label file")
        semantic = self._semantic(image_id, size)
        path = (self.instances or {}).get(image_id)
        if path is None:
            return semantic, *empty_instances(*size)
        ids = read_id_png(path)
        check_size(path, ids.shape, self.image_path(image_id), size, "instance mask")
        masks, classes = instances_from_ids(path, ids, semantic, 1)
        if semantic is None:  # instance masks alone: their objects are the one class
            semantic = np.minimum(ids, 1).astype(np.uint8)
        return semantic, masks, classes

    def load(self, image_id: str, with_image: bool = True) -> Sample:
        image = load_image(self.image_path(image_id), with_image)
        return Sample(image_id, image, *self.labels(image_id, image.shape[:2]))


def numbered_classes(paths: list[Path], background: bool, void: tuple[int, ...]) -> list[str]:
    """Class names for masks without a classes.txt: background (where there is one), then class1, class2, ...
    (class0, class1, ... without) up to the largest label value in any of `paths` (void and 255 left out)."""
    first = ["background"] if background else []
    top = len(first)  # at least one class
    for path in paths:
        values = np.flatnonzero(np.bincount(read_label_png(path).ravel(), minlength=256))
        top = max([top, *(int(v) for v in values if v != IGNORE and int(v) not in void)])
    return first + [f"class{k}" for k in range(len(first), top + 1)]


def open_folders(
    root: Path,
    split: str | None,
    images: Path | None = None,
    masks: Path | None = None,
    instance_masks: Path | None = None,
    instance_class: str | None = None,
    background: bool = True,
    void: tuple[int, ...] = (),
) -> FoldersDataset:
    """Format folders: images in `images` (default <root>/images), semantic masks in `masks` (default <root>/masks
    where it exists), instance id maps in `instance_masks`; class names from <root>/classes.txt (background first
    where there is one), else `instance_class` for instance masks alone, else numbered."""
    image_dir = images or root / "images"
    if not image_dir.is_dir():
        raise input_error(image_dir, "image folder is missing (format folders: data.images, or <root>/images/)")
    if masks is None and (root / "masks").is_dir():
        masks = root / "masks"
    for label_dir in (masks, instance_masks):
        if label_dir is not None and not label_dir.is_dir():
            raise input_error(label_dir, "label folder is missing")
    if masks is None and instance_masks is None:
        raise input_error(root, "format folders needs data.masks or data.instance_masks (folders of label PNGs)")
    files = index_files(image_dir)
    semantic = index_files(masks, exts=(".png",)) if masks else None
    instances = index_files(instance_masks, exts=(".png",)) if instance_masks else None
    names_file = root / "classes.txt"
    if names_file.is_file():
        names = read_class_names(names_file, background)
    elif semantic is None:
        names = ["background", instance_class or "object"]
    else:
        names = numbered_classes(list(semantic.values()), background, void)
    ids = split_ids(root, split, files)
    return FoldersDataset(files, ids, names, semantic=semantic, instances=instances, background=background, void=void)


def open_camvid(root: Path, split: str | None, background: bool = False, void: tuple[int, ...] | None = None):
    """CamVid in SegNet's layout under `root` (split default train); void default (11,), no background."""
    split = split or "train"
    image_dir, label_dir = root / split, root / f"{split}annot"
    if not image_dir.is_dir():
        raise input_error(image_dir, f"image folder is missing (CamVid's {split}/ beside {split}annot/)")
    if not label_dir.is_dir():
        raise input_error(label_dir, "label folder is missing")
    files = index_files(image_dir)
    listing = root / f"{split}.txt"
    ids = split_ids(root, str(listing) if listing.is_file() else None, files)
    void = (CAMVID_VOID,) if void is None else void
    return FoldersDataset(
        files,
        ids,
        list(CAMVID_CLASSES),
        semantic=index_files(label_dir, exts=(".png",)),
        background=background,
        void=void,
    )


def open_cvppp(root: Path, split: str | None) -> FoldersDataset:
    """CVPPP leaf folders: <root>/plantNNN_rgb.png with plantNNN_label.png (ids plantNNN); class leaf."""
    if not root.is_dir():
        raise input_error(root, "dataset folder is missing")
    files = index_files(root, "_rgb", (".png",))
    if not files:
        raise input_error(root, "no plantNNN_rgb.png images here (format cvppp)")
    labels = index_files(root, "_label", (".png",))
    ids = split_ids(root, split, files)
    return FoldersDataset(files, ids, ["background", "leaf"], instances=labels)


# ------------------------------------------------------------------------------------------------------- yolo


def yolo_names(root: Path) -> list[str] | None:
    """Class names of a YOLO dataset's data.yaml (`names`: a list, or a mapping index -> name); None without."""
    for name in ("data.yaml", "dataset.yaml"):
        path = root / name
        if not path.is_file():
            continue
        try:
            names = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("names")
        except (yaml.YAMLError, OSError, UnicodeDecodeError, AttributeError) as e:
            raise input_error(path, f"cannot read class names ({e.__class__.__name__})") from None
        if isinstance(names, dict):
            if sorted(names) != list(range(len(names))):
                raise input_error(path, "names: expected indices 0..K-1")
            names = [names[k] for k in range(len(names))]
        if not isinstance(names, list) or not names:
            raise input_error(path, "names: expected a list of class names")
        return [str(n) for n in names]
    return None


def yolo_objects(path: Path, num_classes: int | None) -> list[tuple[int, np.ndarray]]:
    """(class index, float (P, 2) normalised x, y) of each line of a YOLO label file: a polygon's P >= 3 points, or,
    for a box line (class cx cy w h, YOLO's detection labels), P = 2: the box's corners (x0, y0), (x1, y1)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise input_error(path, f"cannot read labels ({e.__class__.__name__})") from None
    out = []
    for n, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            cls, coords = int(parts[0]), np.asarray([float(v) for v in parts[1:]], np.float64)
        except ValueError:
            raise input_error(path, f"line {n}: expected a class index and numbers") from None
        if len(coords) != 4 and (len(coords) < 6 or len(coords) % 2):
            raise input_error(path, f"line {n}: expected a box (class cx cy w h) or a polygon of 3 or more x y pairs")
        if cls < 0 or (num_classes is not None and cls >= num_classes):
            raise input_error(path, f"line {n}: class index {cls} outside 0..{(num_classes or 1) - 1}")
        if len(coords) == 4:
            cx, cy, bw, bh = coords
            if not (bw > 0 and bh > 0):
                raise input_error(path, f"line {n}: degenerate box (width and height must be > 0)")
            coords = np.array([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2])
        if not np.isfinite(coords).all() or coords.min() < -1e-3 or coords.max() > 1 + 1e-3:
            raise input_error(path, f"line {n}: coordinates must be normalised to 0..1 (a box must lie in its image)")
        out.append((cls, coords.clip(0, 1).reshape(-1, 2)))
    return out


def polygon_mask(points: np.ndarray, h: int, w: int) -> np.ndarray:
    """bool (H, W) inside a polygon of normalised (P, 2) x, y points."""
    canvas = Image.new("L", (w, h), 0)
    ImageDraw.Draw(canvas).polygon([(x * w, y * h) for x, y in points], fill=1, outline=1)
    return np.asarray(canvas, bool)


def pixel_box(corners: np.ndarray, h: int, w: int) -> np.ndarray:
    """int64 (4,) (x0, y0, x1, y1) px, x1 / y1 exclusive and at least a pixel, of normalised corners (2, 2)."""
    eps = 1e-3  # label files round to 6 decimals: 0.301 * 500 = 150.50000000000003 must not take a pixel more
    x0, y0 = min(int(corners[0, 0] * w + eps), w - 1), min(int(corners[0, 1] * h + eps), h - 1)
    x1, y1 = max(int(np.ceil(corners[1, 0] * w - eps)), x0 + 1), max(int(np.ceil(corners[1, 1] * h - eps)), y0 + 1)
    return np.array([x0, y0, min(x1, w), min(y1, h)], np.int64)


class YoloDataset(FoldersDataset):
    """YOLO labels (see the module docstring): class index k is class k + 1 (0 is background); overlapping
    objects: the later line on top in the semantic map. Box lines are objects known by their box only
    (Sample.boxes; IGNORE inside them, polygons painted over)."""

    def labels(self, image_id: str, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.read(image_id, size)[:3]

    def read(self, image_id: str, size: tuple[int, int]) -> tuple[np.ndarray, ...]:
        """semantic (H, W), masks (K, H, W), classes (K,), boxes (B, 4), box classes (B,) of one label file."""
        h, w = size
        objects = yolo_objects(self.instances[image_id], len(self.class_names) - 1)
        boxes = [(c + 1, pixel_box(p, h, w)) for c, p in objects if len(p) == 2]
        polygons = [(c + 1, polygon_mask(p, h, w)) for c, p in objects if len(p) > 2]
        box_arr = np.array([b for _, b in boxes], np.int64).reshape(-1, 4)
        semantic = np.where(boxes_mask(box_arr, (h, w)), IGNORE, 0).astype(np.uint8)
        for cls, mask in polygons:
            semantic[mask] = cls
        kept = [(c, m) for c, m in polygons if m.any()]  # a polygon thinner than a pixel holds none
        masks, classes = empty_instances(h, w)
        if kept:
            masks, classes = np.stack([m for _, m in kept]), np.asarray([c for c, _ in kept], np.int64)
        return semantic, masks, classes, box_arr, np.array([c for c, _ in boxes], np.int64)

    def load(self, image_id: str, with_image: bool = True) -> Sample:
        image = load_image(self.image_path(image_id), with_image)
        semantic, masks, classes, boxes, box_classes = self.read(image_id, image.shape[:2])
        return Sample(image_id, image, semantic, masks, classes, boxes=boxes, box_classes=box_classes)


def open_yolo(root: Path, split: str | None) -> YoloDataset:
    """YOLO segmentation (or detection) dataset under `root`: images/<split>/ and labels/<split>/ (split default
    train)."""
    split = split or "train"
    image_dir, label_dir = root / "images" / split, root / "labels" / split
    if not image_dir.is_dir():
        raise input_error(image_dir, "image folder is missing (format yolo: images/<split>/ beside labels/<split>/)")
    files = index_files(image_dir)
    labels = index_files(label_dir, exts=(".txt",))
    names = yolo_names(root)
    if names is None:  # numbered by the largest index any label file uses
        top = max((c for f in labels.values() for c, _ in yolo_objects(f, None)), default=0)
        names = [f"class{k}" for k in range(top + 1)]
    ids = sorted(files)
    return YoloDataset(files, ids, ["background", *names], instances=labels)
