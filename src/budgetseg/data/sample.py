"""The sample type shared by the semantic and instance tasks, and the reader interface."""

from __future__ import annotations

import functools
import os
import threading
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from budgetseg.errors import input_error

IGNORE = 255  # semantic label of pixels that count for nothing (VOC borders, crowd regions)


@dataclass
class Sample:
    """One image and its labels.

    image:            uint8 (H, W, 3)
    semantic:         uint8 (H, W); 0 = background, 1..C = classes, 255 = ignore
    instance_masks:   bool (K, H, W), one mask per object
    instance_classes: int64 (K,), class id (1..C) of each object
    labeled:          False for an image without labels (semantic all 255, no instances)
    crowd:            [(class id, bool (H, W))], crowd regions (COCO iscrowd): 255 in `semantic` too, kept apart
                      so the instance evaluator can apply COCO's crowd rule instead of treating them as void
    boxes:            int64 (B, 4), objects known by their box only (x0, y0, x1, y1 in px, x1 / y1 exclusive):
                      255 in `semantic` inside them (which pixels are the object is unknown) until boxmask.py
                      estimates their masks
    box_classes:      int64 (B,), class id of each box
    void:             bool (H, W) or None: where an image has boxes, the pixels its labels mark ignored for other
                      reasons (crowd, void, difficult), so that they stay ignored once the boxes are estimated
    """

    id: str
    image: np.ndarray
    semantic: np.ndarray
    instance_masks: np.ndarray
    instance_classes: np.ndarray
    labeled: bool = True
    crowd: list[tuple[int, np.ndarray]] = field(default_factory=list)
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.int64))
    box_classes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    void: np.ndarray | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) in pixels."""
        return self.image.shape[0], self.image.shape[1]


class SegDataset(Protocol):
    """What every reader offers. With `background` (most label sets), `class_names[0]` is the background, no class:
    C = len(class_names) - 1; without (CamVid, Cityscapes), every name is a class. `has_instances` is False for
    semantic-only data (no instance annotations at all)."""

    class_names: list[str]
    ids: list[str]
    has_instances: bool
    background: bool

    def image_path(self, image_id: str) -> Path:
        """The image file of `image_id`."""
        ...

    def has_labels(self, image_id: str) -> bool:
        """Whether `image_id` has label files (a partly labelled pool has images without)."""
        ...

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...

    def load(self, image_id: str, with_image: bool = True) -> Sample:
        """The sample of `image_id`. With `with_image=False`, `image` is a (H, W, 0) placeholder (for statistics)."""
        ...


def first_class(ds: SegDataset) -> int:
    """The id of the first class that is an object class: 1 after a background, else 0."""
    return 1 if ds.background else 0


IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

ID_MAX_BYTES = 200  # an id names output files (<id>.png, <id>.json, <id><ext>): with a suffix it fits 255 bytes


def quoted(text: str, limit: int = 80) -> str:
    """repr of `text` (line breaks and control characters escaped: it fits on one line), cut at `limit`."""
    return repr(text) if len(text) <= limit else repr(text[: limit - 3]) + "..."


def _unprintable(text: str) -> bool:
    """Whether `text` holds a control character or anything str.splitlines breaks at (ids are stored a line each)."""
    return any(ord(c) < 32 or 127 <= ord(c) < 160 for c in text) or len(text.splitlines()) > 1


def check_id(where: str | Path, image_id: str, at: str = "") -> str:
    """`image_id` when it can name output files: a plain file name (no path separator, no leading '.', so no '..'
    and no hidden file), without line breaks or control characters, no white space around it, at most
    ID_MAX_BYTES bytes. Otherwise a one-line error naming `where` (the file or folder it was read from; `at` says
    where in it, e.g. "line 3: "). Every reader checks its ids so: outputs are named after them."""
    problem = None
    if not image_id:
        problem = "is empty"
    elif _unprintable(image_id):
        problem = "holds a line break or a control character"
    elif "/" in image_id or "\\" in image_id:
        problem = "holds a path separator"
    elif image_id.startswith("."):
        problem = "starts with '.' (a hidden file, or a way out of a folder)"
    elif image_id != image_id.strip():
        problem = "starts or ends with white space"
    elif len(image_id.encode("utf-8")) > ID_MAX_BYTES:
        problem = f"is longer than {ID_MAX_BYTES} bytes"
    if problem:
        raise input_error(where, f"{at}image id {quoted(image_id)} {problem}; ids name output files: plain names only")
    return image_id


def check_file_name(where: str | Path, name: str, at: str = "") -> str:
    """`name`, an image path an annotation file gives relative to its image folder, when it stays inside that
    folder: not empty, not absolute, no '..' part, no backslash, no control character. Otherwise a one-line error
    naming `where` (the annotation file). Symbolic links inside the folder are followed: they are its owner's."""
    parts = name.split("/")
    if not name or name.startswith("/") or ".." in parts or "\\" in name or _unprintable(name):
        raise input_error(where, f"{at}image file {quoted(name)} is not a plain path inside the image folder")
    return name


def unlabeled_sample(image_id: str, image: np.ndarray) -> Sample:
    """A sample with an image and no labels: semantic all IGNORE (a read-only view that takes no memory: a huge
    image's would take a byte a pixel), no instances."""
    h, w = image.shape[:2]
    semantic = np.broadcast_to(np.uint8(IGNORE), (h, w))
    return Sample(image_id, image, semantic, *empty_instances(h, w), labeled=False)


EXIF_ORIENTATION = 0x0112  # how the camera was held; values 5-8 swap width and height
WHITE = (255, 255, 255, 255)  # what transparent pixels are shown on, as image viewers do


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(EXIF_ORIENTATION, 1))
    except Exception:  # a damaged EXIF block should not make the pixels unreadable
        return 1


def check_class_names(path: str | Path, names: list[str], background: bool = True) -> None:
    """One-line errors naming `path` unless `names` are distinct, non-empty names without line breaks or control
    characters, at least one class (plus the background where the label set has one) and at most 255 (labels are
    uint8 with 255 = ignore; names label plots, tables and CSV rows)."""
    if len(names) < 1 + background:
        need = "background plus at least one class" if background else "at least one class"
        raise input_error(path, f"need {need}, got {len(names)} name(s)")
    if len(names) > IGNORE:
        raise input_error(path, f"at most {IGNORE} class names fit in uint8 labels, got {len(names)}")
    for k, name in enumerate(names):
        if not name.strip() or _unprintable(name):
            raise input_error(
                path, f"class {k}: name {quoted(name)} is empty or holds a line break or control character"
            )
        if name in names[:k]:
            raise input_error(path, f"class name {quoted(name)} appears twice")


DEFAULT_MAX_PIXELS = 1 << 28  # 268 million pixels (16384 x 16384): decoding takes 3 bytes a pixel, inference more
MAX_PIXELS_ENV = "BUDGETSEG_MAX_PIXELS"  # the limit, where set (the CLI's --max-pixels sets it for every process)


def max_pixels() -> int:
    """The most pixels an image or label map may have: $BUDGETSEG_MAX_PIXELS, else DEFAULT_MAX_PIXELS."""
    value = os.environ.get(MAX_PIXELS_ENV, "")
    return int(value) if value.strip().isdigit() and int(value) > 0 else DEFAULT_MAX_PIXELS


_PILLOW_LIMIT = threading.RLock()  # Pillow's decompression-bomb limit is one global: set while a file is read


@contextmanager
def open_image(path: Path) -> Iterator[Image.Image]:
    """Image.open(path) for the block (which decodes it), refused in one line when it holds more than max_pixels()
    pixels. Meanwhile Pillow's own limit (a warning, then an error, at sizes of its choosing) is that one, and is
    set back after."""
    cap = max_pixels()
    with _PILLOW_LIMIT, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, cap
        try:
            try:
                im = Image.open(path)
            except Image.DecompressionBombError:
                raise input_error(
                    path, f"more than twice the {cap:,} pixels budgetseg reads (raise: --max-pixels)"
                ) from None
            with im:
                if im.width * im.height > cap:
                    size = f"{im.width}x{im.height} = {im.width * im.height:,} pixels"
                    raise input_error(
                        path, f"{size}, more than the {cap:,} pixels budgetseg reads (raise: --max-pixels)"
                    )
                yield im
        finally:
            Image.MAX_IMAGE_PIXELS = limit


def _upright_rgb(im: Image.Image) -> Image.Image:
    """`im` turned upright by its EXIF orientation, as 8-bit RGB: 16-bit grayscale scaled (convert would clip at
    255), transparent pixels put on white."""
    if _orientation(im) != 1:
        im = ImageOps.exif_transpose(im)
    if im.mode == "I" or im.mode.startswith("I;16"):
        gray = (np.clip(np.asarray(im, np.int64), 0, 65535) >> 8).astype(np.uint8)
        return Image.fromarray(np.repeat(gray[..., None], 3, axis=2))
    if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
        im = Image.alpha_composite(Image.new("RGBA", im.size, WHITE), im.convert("RGBA"))
    return im if im.mode == "RGB" else im.convert("RGB")  # no copy of an RGB image: a huge one costs it twice


BAND_PIXELS = 1 << 22  # pixels converted at a time from a large image


def pixels(im: Image.Image) -> np.ndarray:
    """np.asarray(im), a band of rows at a time for a large image: at once it would hold two more copies of it."""
    w, h = im.size
    if w * h <= BAND_PIXELS:
        return np.asarray(im)
    first = np.asarray(im.crop((0, 0, w, 1)))
    out = np.empty((h, *first.shape[1:]), first.dtype)
    band = max(1, BAND_PIXELS // w)
    for top in range(0, h, band):
        out[top : top + band] = np.asarray(im.crop((0, top, w, min(h, top + band))))
    return out


def label_counts(labels: np.ndarray) -> np.ndarray:
    """int64 (256,): how many pixels of a uint8 map hold each value, counted a band at a time (np.bincount of the
    whole map would first copy it to int64: 8 bytes a pixel)."""
    flat = labels.reshape(-1)
    counts = np.zeros(256, np.int64)
    for lo in range(0, flat.size, BAND_PIXELS):
        counts += np.bincount(flat[lo : lo + BAND_PIXELS], minlength=256)
    return counts


def read_image(path: str | Path, resize: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 (H, W, 3) RGB, turned upright by its EXIF orientation; grayscale, palette and 16-bit images are
    converted, transparent pixels are put on white. resize (W, H): resized so (bilinear), a JPEG decoded at a
    reduced scale first where it is larger still (a huge photo then costs little memory). One-line errors for a
    missing or undecodable file, or one of more than max_pixels() pixels."""
    path = Path(path)
    if not path.is_file():
        raise input_error(path, missing_image(path))
    try:
        with open_image(path) as im:
            if resize is not None:
                im.draft(None, resize)  # JPEG only: decode at 1/2, 1/4 or 1/8 scale, still at least `resize`
            rgb = _upright_rgb(im)
            return pixels(rgb if resize is None else rgb.resize(resize, Image.BILINEAR))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise input_error(path, f"cannot read image ({e.__class__.__name__}: {e})") from None


def image_size(path: str | Path) -> tuple[int, int]:
    """(H, W) of an image file as read_image returns it (EXIF orientation applied), from its header without
    decoding the pixels; one-line errors as read_image's."""
    path = Path(path)
    if not path.is_file():
        raise input_error(path, missing_image(path))
    try:
        with open_image(path) as im:
            w, h = im.size
            if _orientation(im) in (5, 6, 7, 8):  # rotated by 90 degrees
                w, h = h, w
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise input_error(path, f"cannot read image ({e.__class__.__name__}: {e})") from None
    return h, w


def read_label_png(path: str | Path) -> np.ndarray:
    """uint8 (H, W) of palette indices (VOC label PNGs); a corrupt or non-index PNG is an error."""
    path = Path(path)
    if not path.is_file():
        raise input_error(path, "label file is missing")
    try:
        with open_image(path) as im:
            if im.mode not in ("P", "L"):
                raise input_error(path, f"label PNG must be palette or grayscale, got mode {im.mode}")
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise input_error(path, f"corrupt label PNG ({e.__class__.__name__}: {e})") from None
    return arr.astype(np.uint8, copy=False)


def apply_void(semantic: np.ndarray, void: tuple[int, ...]) -> np.ndarray:
    """uint8 (H, W) with the label values in `void` (a dataset's own "unlabelled" values) replaced by IGNORE."""
    if not void:
        return semantic
    return np.where(np.isin(semantic, void), IGNORE, semantic).astype(np.uint8)


def empty_instances(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((0, h, w), dtype=bool), np.zeros((0,), dtype=np.int64)


@functools.cache
def _palette() -> tuple[int, ...]:
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return tuple(pal)


def voc_palette() -> list[int]:
    """The 256-entry Pascal VOC colour map as a flat [r, g, b, ...] list (index 255 = cream border). Built once:
    building it costs more than encoding a small label PNG."""
    return list(_palette())


# zlib's run-length strategy, not its default: the same pixels, encoded 3-4x faster (at the default, encoding took
# a third as long as the forward pass on CPU), palette files ~10 % larger, gray ones ~10 % smaller
PNG_STRATEGY = zlib.Z_RLE


def missing_image(path: Path) -> str:
    """The error for an image file that is not there; a relative path says which folder was searched."""
    return "image file is missing" + ("" if path.is_absolute() else f" (looked in {path.parent.resolve()})")


def encode_label_png(arr: np.ndarray, fileobj) -> None:
    """Write uint8 (H, W) indices as a VOC-palette PNG to an open binary file."""
    im = Image.fromarray(np.asarray(arr, dtype=np.uint8), mode="P")
    im.putpalette(_palette())
    im.save(fileobj, format="PNG", compress_type=PNG_STRATEGY)


def encode_gray_png(arr: np.ndarray, fileobj) -> None:
    """Write uint8 (H, W) values as a grayscale PNG to an open binary file."""
    Image.fromarray(np.asarray(arr, dtype=np.uint8), mode="L").save(fileobj, format="PNG", compress_type=PNG_STRATEGY)
