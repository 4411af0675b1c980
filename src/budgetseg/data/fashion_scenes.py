"""The built-in dataset `fashion-scenes`: real Fashion-MNIST items pasted onto crops of real photographs.

Each scene is a random crop of a photo shipped inside scikit-image / scikit-learn, with 1-8 tinted,
scaled Fashion-MNIST items pasted in order (later ones occlude earlier ones). Items of the
Fashion-MNIST train split feed the training pool, items of its test split feed val, so no object
appears on both sides. Masks are exact: a pixel belongs to the last item pasted over it.

Layout written by `build_fashion_scenes` (the VOC layout plus COCO JSON, so the same readers serve it):

    JPEGImages/<id>.jpg                      quality 95
    SegmentationClass/<id>.png               VOC palette; 0 background, 1..10 classes, 255 ignore
    SegmentationObject/<id>.png              VOC palette; 0 background, 1..K objects (paste order), 255 ignore
    ImageSets/Segmentation/{train,val}.txt   ids, one per line ("train_00000", "val_00000", ...)
    annotations/instances_{train,val}.json   COCO instances; file_name is relative to JPEGImages/
    classes.txt                              FASHION_CLASSES, one per line
    fashion_scenes.json                      the config used (also marks the folder as a build)
"""

from __future__ import annotations

import colorsys
import gzip
import os
import shutil
import tempfile
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from tqdm import tqdm

from budgetseg.data.coco import mask_to_rle
from budgetseg.data.sample import IGNORE, Sample, encode_label_png
from budgetseg.errors import BudgetsegError, input_error
from budgetseg.io import OWNER, temp_folder, write_json, write_text

FASHION_CLASSES = [
    "background", "t-shirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle-boot",
]  # fmt: skip  # label i + 1 = Fashion-MNIST label i

DEFAULT_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
ENV_FASHION_MNIST = "BUDGETSEG_FASHION_MNIST"
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# Real photographs that ship inside the packages (no download); grayscale ones become RGB.
SKIMAGE_PHOTOS = (
    "astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
    "camera", "moon", "coins", "brick", "grass", "gravel",
)  # fmt: skip
SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")

# Scene statistics, chosen to match Pascal VOC: ~1.5 classes and ~2.8 objects per image.
CLASS_COUNT_PROBS = (0.6, 0.3, 0.1)  # P(1, 2, 3 classes): mean 1.5
EXTRA_OBJECTS_MEAN = 1.3  # Poisson mean of objects beyond one per class
MAX_OBJECTS = 8
SCALE_RANGE = (0.2, 0.6)  # item's longer side, as a fraction of the image side
MIN_VISIBLE = 0.25  # an object less visible than this (fraction of its pasted area) is ignored
MIN_PIXELS = 20  # ... and so is one with fewer visible pixels than this
PLACE_TRIES = 10  # positions tried before accepting one that hides too much
ITEM_THRESHOLD = 20  # Fashion-MNIST intensity above which a pixel is part of the item


@dataclass
class FashionScenesConfig:
    train: int = 2000  # training-pool images
    val: int = 500
    size: int = 128  # image side in pixels
    seed: int = 0


# ---------------------------------------------------------------- Fashion-MNIST


def find_fashion_mnist(explicit: str | Path | None = None) -> Path:
    """The folder holding the four Fashion-MNIST IDX files (gzipped or not).

    Looks at `explicit`, else $BUDGETSEG_FASHION_MNIST, else the Debian folder; a folder given by
    the user is used or refused, never silently replaced by another. Also accepts torchvision's
    root (`<dir>/FashionMNIST/raw`) and raw folder.
    """
    given = explicit if explicit is not None else os.environ.get(ENV_FASHION_MNIST) or None
    base = Path(given) if given is not None else DEFAULT_FASHION_MNIST
    for folder in (base, base / "raw", base / "FashionMNIST" / "raw"):
        if all(_idx_path(folder, name) for pair in IDX_FILES.values() for name in pair):
            return folder
    how = (
        "install it with `apt-get install dataset-fashion-mnist`, or point --fashion-mnist or "
        f"${ENV_FASHION_MNIST} at a folder with the IDX files "
        "(train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
        "t10k-labels-idx1-ubyte.gz)"
    )
    raise input_error(base, f"Fashion-MNIST not found; {how}")


def _idx_path(folder: Path, name: str) -> Path | None:
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    return None


def load_idx(path: str | Path) -> np.ndarray:
    """uint8 array of an IDX file (gzipped or not), shape from its header; a bad file is a one-line error."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise input_error(path, f"cannot read IDX file ({e.__class__.__name__}: {e})") from None
    # Magic: two zero bytes, type code 0x08 (unsigned byte), number of dimensions.
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08" or not 1 <= raw[3] <= 4:
        raise input_error(path, f"not an unsigned-byte IDX file (magic {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise input_error(path, "truncated IDX file (header cut short)")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise input_error(path, f"IDX header promises {expected} bytes of data {shape}, found {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def load_fashion_mnist(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Items uint8 (N, 28, 28) and labels int64 (N,) in 0..9 of split "train" or "test"."""
    images_name, labels_name = IDX_FILES[split]
    images_path = _idx_path(folder, images_name) or folder / f"{images_name}.gz"
    labels_path = _idx_path(folder, labels_name) or folder / f"{labels_name}.gz"
    images, labels = load_idx(images_path), load_idx(labels_path)
    if images.ndim != 3:
        raise input_error(images_path, f"expected (N, H, W) images, got shape {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise input_error(labels_path, f"expected {len(images)} labels, got shape {labels.shape}")
    if len(labels) == 0 or labels.max() >= len(FASHION_CLASSES) - 1:
        raise input_error(labels_path, "labels must be 0..9 and not empty")
    return images, labels.astype(np.int64)


# ---------------------------------------------------------------- photos


def background_photos(short_side: int | None = None) -> list[np.ndarray]:
    """uint8 (H, W, 3) photos from skimage.data and sklearn, in a fixed order.

    With `short_side`, larger photos are downscaled so their shorter side is `short_side` px
    (a speed-up: crops are resized to the scene size anyway).
    """
    try:
        import skimage.data
        from sklearn.datasets import load_sample_images
    except ImportError:
        raise BudgetsegError(
            "the built-in data is composed on photos that ship in scikit-image and scikit-learn: "
            "pip install 'budgetseg[demo]'"
        ) from None

    photos = []
    for name in SKIMAGE_PHOTOS:
        try:
            photos.append(getattr(skimage.data, name)())
        except Exception as e:  # a scikit-image without the file: say which, in one line
            raise BudgetsegError(f"skimage.data.{name}: photo not available offline ({e})") from None
    sample = load_sample_images()
    by_name = {Path(f).name: im for f, im in zip(sample.filenames, sample.images, strict=True)}
    photos += [by_name[name] for name in SKLEARN_PHOTOS]
    photos = [np.repeat(p[..., None], 3, axis=2) if p.ndim == 2 else p[..., :3] for p in photos]
    if short_side is not None:
        photos = [_shrink(p, short_side) for p in photos]
    return photos


def _shrink(photo: np.ndarray, short_side: int) -> np.ndarray:
    h, w = photo.shape[:2]
    f = short_side / min(h, w)
    if f >= 1:
        return photo
    return np.asarray(Image.fromarray(photo).resize((round(w * f), round(h * f)), Image.BILINEAR))


def random_crop(rng: np.random.Generator, photo: np.ndarray, size: int) -> np.ndarray:
    """uint8 (size, size, 3): a square crop of 40-100% of the photo's shorter side, maybe mirrored."""
    h, w = photo.shape[:2]
    side = max(1, round(rng.uniform(0.4, 1.0) * min(h, w)))
    y, x = rng.integers(h - side + 1), rng.integers(w - side + 1)
    crop = Image.fromarray(photo[y : y + side, x : x + side]).resize((size, size), Image.BILINEAR)
    crop = np.asarray(crop)
    return crop[:, ::-1] if rng.random() < 0.5 else crop


# ---------------------------------------------------------------- scenes


def item_cutout(item: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (28, 28) item -> (intensity uint8 (h, w), mask bool (h, w)) cropped to its largest blob.

    The tiny blur bridges one-pixel gaps so a sandal's straps stay one object; holes are filled
    because a bag's handle loop is part of the bag. An empty item gives (0, 0) arrays.
    """
    mask = ndimage.gaussian_filter(item.astype(np.float32), 0.5) > ITEM_THRESHOLD
    mask = ndimage.binary_fill_holes(mask)
    blobs, n = ndimage.label(mask)
    if n == 0:
        return np.zeros((0, 0), np.uint8), np.zeros((0, 0), bool)
    if n > 1:
        mask = blobs == 1 + np.argmax(np.bincount(blobs.ravel())[1:])
    ys, xs = np.nonzero(mask)
    win = np.s_[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    return np.where(mask, item, 0)[win].astype(np.uint8), mask[win]


def _scaled_item(rng: np.random.Generator, item: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(rgb uint8 (h, w, 3), mask bool (h, w)): the item scaled, maybe mirrored, and tinted."""
    intensity, mask = item_cutout(item)
    if mask.size == 0:
        return np.zeros((0, 0, 3), np.uint8), mask
    h, w = mask.shape
    f = rng.uniform(*SCALE_RANGE) * size / max(h, w)
    dims = (max(1, round(w * f)), max(1, round(h * f)))
    intensity = np.asarray(Image.fromarray(intensity).resize(dims, Image.BILINEAR), dtype=np.float32)
    mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(dims, Image.BILINEAR)) >= 128
    if rng.random() < 0.5:
        intensity, mask = intensity[:, ::-1], mask[:, ::-1]
    # Shade times a saturated colour keeps the item's own texture; the floor keeps dark items visible.
    colour = np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.6, 1.0), rng.uniform(0.75, 1.0)))
    shade = 0.25 + 0.75 * intensity[..., None] / 255.0
    return np.clip(shade * colour * 255.0 + 0.5, 0, 255).astype(np.uint8), mask


def _frame_windows(top: int, left: int, h: int, w: int, size: int) -> tuple[tuple, tuple]:
    """(slices into the image, slices into the object) of an object whose corner is at (top, left)."""
    y0, x0, y1, x1 = max(top, 0), max(left, 0), min(top + h, size), min(left + w, size)
    y1, x1 = max(y1, y0), max(x1, x0)
    return np.s_[y0:y1, x0:x1], np.s_[y0 - top : y1 - top, x0 - left : x1 - left]


def _scene_classes(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """Fashion-MNIST labels of the objects of one scene, in paste order (1..MAX_OBJECTS of them)."""
    available = np.flatnonzero(np.bincount(labels, minlength=len(FASHION_CLASSES) - 1))
    k = min(1 + rng.choice(len(CLASS_COUNT_PROBS), p=CLASS_COUNT_PROBS), len(available))
    chosen = rng.choice(available, size=k, replace=False)
    extra = min(rng.poisson(EXTRA_OBJECTS_MEAN), MAX_OBJECTS - k)
    per_class = 1 + rng.multinomial(extra, np.full(k, 1.0 / k))
    order = np.repeat(chosen, per_class)
    rng.shuffle(order)
    return order


def render_scene(
    rng: np.random.Generator,
    items: np.ndarray,
    labels: np.ndarray,
    photos: list[np.ndarray],
    size: int,
    image_id: str = "",
) -> Sample:
    """One scene of `size` x `size` px built from the item pool `items` uint8 (N, 28, 28), `labels` (N,) 0..9.

    Instances are the visible parts of the pasted items, in paste order. An item hidden below
    MIN_VISIBLE / MIN_PIXELS (after PLACE_TRIES positions) is not an instance: its visible pixels
    are IGNORE in `semantic`, so every label stays exact.
    """
    image = random_crop(rng, photos[rng.integers(len(photos))], size).copy()
    owner = np.full((size, size), -1, np.int16)  # index of the object on top of each pixel
    classes, needed = [], []
    for label in _scene_classes(rng, labels):
        rgb, mask = _scaled_item(rng, items[rng.choice(np.flatnonzero(labels == label))], size)
        if not mask.any():
            continue
        j, (h, w) = len(classes), mask.shape
        classes.append(int(label) + 1)
        needed.append(max(MIN_PIXELS, MIN_VISIBLE * mask.sum()))
        before = np.bincount(owner[owner >= 0], minlength=j + 1)
        # Centre inside the middle 80% of the frame, so an item may leave it only in part.
        for _ in range(PLACE_TRIES):
            top = round(rng.uniform(0.1, 0.9) * size - h / 2)
            left = round(rng.uniform(0.1, 0.9) * size - w / 2)
            win, obj = _frame_windows(top, left, h, w, size)
            trial = owner.copy()
            trial[win][mask[obj]] = j
            after = np.bincount(trial[trial >= 0], minlength=j + 1)
            hides = [i for i in range(j) if before[i] >= needed[i] > after[i]]
            if after[j] >= needed[j] and not hides:
                break
        owner = trial
        image[win][mask[obj]] = rgb[obj][mask[obj]]
    visible = np.bincount(owner[owner >= 0], minlength=len(classes))
    kept = [j for j in range(len(classes)) if visible[j] >= needed[j]]
    lut = np.full(len(classes) + 1, IGNORE, np.uint8)  # owner -1 (background) -> lut[-1] = 0
    lut[-1] = 0
    lut[kept] = [classes[j] for j in kept]
    return Sample(
        id=image_id,
        image=image,
        semantic=lut[owner],
        instance_masks=np.stack([owner == j for j in kept]) if kept else np.zeros((0, size, size), bool),
        instance_classes=np.array([classes[j] for j in kept], dtype=np.int64),
    )


def object_map(sample: Sample) -> np.ndarray:
    """uint8 (H, W) VOC SegmentationObject values: 0 background, 1..K instances, 255 ignore."""
    out = np.where(sample.semantic == IGNORE, IGNORE, 0).astype(np.uint8)
    for k, mask in enumerate(sample.instance_masks):
        out[mask] = k + 1
    return out


# ---------------------------------------------------------------- writing


def build_fashion_scenes(
    out: Path,
    cfg: FashionScenesConfig,
    fashion_mnist: Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Render the dataset into `out` (layout in the module docstring) and return `out`.

    Everything is written to a hidden temp folder next to `out` and renamed onto it at the end, so
    an interrupted build leaves nothing behind (the folder, not each file, is the atomic unit).
    The same config gives byte-identical files.
    """
    out = Path(out)
    _check_config(cfg)
    _check_out(out, overwrite)
    folder = find_fashion_mnist(fashion_mnist)
    pools = {"train": load_fashion_mnist(folder, "train"), "val": load_fashion_mnist(folder, "test")}
    photos = background_photos(short_side=3 * cfg.size)
    # One child stream per split, so changing the val count leaves the training images alone.
    streams = dict(zip(("train", "val"), np.random.SeedSequence(cfg.seed).spawn(2), strict=True))
    tmp = temp_folder(out)  # a killed build's is removed by the next build
    try:
        for sub in ("JPEGImages", "SegmentationClass", "SegmentationObject"):
            (tmp / sub).mkdir()
        with tqdm(total=cfg.train + cfg.val, desc="fashion-scenes", disable=not progress) as bar:
            for split, count in (("train", cfg.train), ("val", cfg.val)):
                rng = np.random.default_rng(streams[split])
                ids = []
                coco = _coco_skeleton()
                for i in range(count):
                    sample = render_scene(rng, *pools[split], photos, cfg.size, image_id=f"{split}_{i:05d}")
                    _write_sample(tmp, sample)
                    _add_coco(coco, sample)
                    ids.append(sample.id)
                    bar.update()
                write_text(tmp / "ImageSets" / "Segmentation" / f"{split}.txt", _lines(ids))
                write_json(tmp / "annotations" / f"instances_{split}.json", coco)
        write_text(tmp / "classes.txt", _lines(FASHION_CLASSES))
        photos_used = [f"skimage.data.{n}" for n in SKIMAGE_PHOTOS] + [f"sklearn:{n}" for n in SKLEARN_PHOTOS]
        meta = {"dataset": "fashion-scenes", "config": asdict(cfg), "classes": FASHION_CLASSES}
        write_json(tmp / "fashion_scenes.json", meta | {"photos": photos_used})
        os.sync()  # every file on disk before the rename publishes them
        _swap_in(tmp, out)
        (out / OWNER).unlink()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _lines(words: list[str]) -> str:
    return "".join(f"{w}\n" for w in words)


def _check_config(cfg: FashionScenesConfig) -> None:
    if cfg.train < 0 or cfg.val < 0 or cfg.train + cfg.val == 0:
        raise BudgetsegError(f"fashion-scenes: need train >= 0, val >= 0 and some images (got {cfg.train}, {cfg.val})")
    if not 32 <= cfg.size <= 2048:
        raise BudgetsegError(f"fashion-scenes: size must be 32..2048 px, got {cfg.size}")
    if cfg.seed < 0:
        raise BudgetsegError(f"fashion-scenes: seed must be >= 0, got {cfg.seed}")


def _check_out(out: Path, overwrite: bool) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise input_error(out, "exists and is not a folder")
    if not any(out.iterdir()):
        return
    if not overwrite:
        raise input_error(out, "exists and is not empty (pass overwrite / --overwrite to replace a previous build)")
    if not (out / "fashion_scenes.json").is_file():
        raise input_error(out, "refusing to replace: not a fashion-scenes build (no fashion_scenes.json inside)")


def _swap_in(tmp: Path, out: Path) -> None:
    """Rename the finished `tmp` onto `out`; a previous build there is removed only after the swap."""
    if not out.exists():
        os.rename(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    os.rename(out, old / "build")
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old / "build", out)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def _write_sample(root: Path, sample: Sample) -> None:
    """Plain writes: `root` is the private temp folder, which is the unit of atomicity (an fsync
    per file would triple the build time for no gain; `build_fashion_scenes` syncs once at the end)."""
    with open(root / "JPEGImages" / f"{sample.id}.jpg", "wb") as f:
        Image.fromarray(sample.image).save(f, format="JPEG", quality=95)
    with open(root / "SegmentationClass" / f"{sample.id}.png", "wb") as f:
        encode_label_png(sample.semantic, f)
    with open(root / "SegmentationObject" / f"{sample.id}.png", "wb") as f:
        encode_label_png(object_map(sample), f)


def _coco_skeleton() -> dict:
    categories = [{"id": c, "name": n, "supercategory": "fashion"} for c, n in enumerate(FASHION_CLASSES) if c]
    return {"images": [], "annotations": [], "categories": categories}


def _add_coco(coco: dict, sample: Sample) -> None:
    """Append one image (file_name relative to JPEGImages/) and its instances; ids count from 1."""
    h, w = sample.size
    image_id = len(coco["images"]) + 1
    coco["images"].append({"id": image_id, "file_name": f"{sample.id}.jpg", "height": h, "width": w})
    for mask, cls in zip(sample.instance_masks, sample.instance_classes, strict=True):
        ys, xs = np.nonzero(mask)
        x0, y0 = int(xs.min()), int(ys.min())
        coco["annotations"].append(
            {
                "id": len(coco["annotations"]) + 1,
                "image_id": image_id,
                "category_id": int(cls),
                "segmentation": mask_to_rle(mask),
                "area": int(mask.sum()),
                "bbox": [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1],
                "iscrowd": 0,
            }
        )
