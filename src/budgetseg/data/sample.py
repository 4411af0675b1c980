"""The sample type shared by the semantic and instance tasks, and the reader interface."""

from __future__ import annotations

import functools
import zlib
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
    """

    id: str
    image: np.ndarray
    semantic: np.ndarray
    instance_masks: np.ndarray
    instance_classes: np.ndarray
    labeled: bool = True
    crowd: list[tuple[int, np.ndarray]] = field(default_factory=list)

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) in pixels."""
        return self.image.shape[0], self.image.shape[1]


class SegDataset(Protocol):
    """What every reader offers. `class_names[0]` is the background; C = len(class_names) - 1.
    `has_instances` is False for semantic-only data (no instance annotations at all)."""

    class_names: list[str]
    ids: list[str]
    has_instances: bool

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
    """A sample with an image and no labels: semantic all IGNORE, no instances."""
    h, w = image.shape[:2]
    return Sample(image_id, image, np.full((h, w), IGNORE, np.uint8), *empty_instances(h, w), labeled=False)


EXIF_ORIENTATION = 0x0112  # how the camera was held; values 5-8 swap width and height
WHITE = (255, 255, 255, 255)  # what transparent pixels are shown on, as image viewers do


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(EXIF_ORIENTATION, 1))
    except Exception:  # a damaged EXIF block should not make the pixels unreadable
        return 1


def check_class_names(path: str | Path, names: list[str]) -> None:
    # Labels are stored as uint8 with 255 reserved for ignore, so at most 255 classes fit.
    if len(names) < 2:
        raise input_error(path, f"need background plus at least one class, got {len(names)} name(s)")
    if len(names) > IGNORE:
        raise input_error(path, f"at most {IGNORE} class names fit in uint8 labels, got {len(names)}")


def read_image(path: str | Path) -> np.ndarray:
    """uint8 (H, W, 3) RGB, turned upright by its EXIF orientation; grayscale, palette and 16-bit images are
    converted, transparent pixels are put on white. One-line errors for a missing or undecodable file."""
    path = Path(path)
    if not path.is_file():
        raise input_error(path, "image file is missing")
    try:
        with Image.open(path) as im:
            if _orientation(im) != 1:
                im = ImageOps.exif_transpose(im)
            if im.mode == "I" or im.mode.startswith("I;16"):  # 16-bit grayscale: convert("RGB") clips at 255
                gray = (np.clip(np.asarray(im, np.int64), 0, 65535) >> 8).astype(np.uint8)
                return np.repeat(gray[..., None], 3, axis=2)
            if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
                im = Image.alpha_composite(Image.new("RGBA", im.size, WHITE), im.convert("RGBA"))
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise input_error(path, f"cannot read image ({e.__class__.__name__}: {e})") from None


def image_size(path: str | Path) -> tuple[int, int]:
    """(H, W) of an image file as read_image returns it (EXIF orientation applied), from its header without
    decoding the pixels."""
    path = Path(path)
    if not path.is_file():
        raise input_error(path, "image file is missing")
    try:
        with Image.open(path) as im:
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
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise input_error(path, f"label PNG must be palette or grayscale, got mode {im.mode}")
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise input_error(path, f"corrupt label PNG ({e.__class__.__name__}: {e})") from None
    return arr.astype(np.uint8, copy=False)


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


def encode_label_png(arr: np.ndarray, fileobj) -> None:
    """Write uint8 (H, W) indices as a VOC-palette PNG to an open binary file."""
    im = Image.fromarray(np.asarray(arr, dtype=np.uint8), mode="P")
    im.putpalette(_palette())
    im.save(fileobj, format="PNG", compress_type=PNG_STRATEGY)


def encode_gray_png(arr: np.ndarray, fileobj) -> None:
    """Write uint8 (H, W) values as a grayscale PNG to an open binary file."""
    Image.fromarray(np.asarray(arr, dtype=np.uint8), mode="L").save(fileobj, format="PNG", compress_type=PNG_STRATEGY)
