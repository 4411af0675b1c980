"""CVAT's labelmap.txt ("Segmentation mask 1.1" / VOC layout) and colour label PNGs.

labelmap.txt: a `# label:color_rgb:parts:actions` header, then one `name:r,g,b:parts:actions` line per label,
background first. A label named `ignore` or `void` (any case) is the don't-care label: its pixels read as 255, as
do pixels of VOC's border colour 224,224,192 when no class uses that colour.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from budgetseg.data.sample import IGNORE, check_class_names, open_image, read_label_png, voc_palette
from budgetseg.errors import input_error

IGNORE_NAMES = ("ignore", "void")
IGNORE_COLOUR = (224, 224, 192)  # VOC's border colour (palette index 255)
HEADER = "# label:color_rgb:parts:actions"

Colour = tuple[int, int, int]


def voc_colours(num_classes: int) -> dict[int, Colour]:
    """Label value -> VOC palette colour for classes 0..num_classes-1 and IGNORE."""
    pal = voc_palette()
    return {i: tuple(pal[3 * i : 3 * i + 3]) for i in [*range(num_classes), IGNORE]}


def labelmap_text(class_names: list[str], colours: dict[int, Colour]) -> str:
    """labelmap.txt for `class_names` (background first) plus the `ignore` label (colour colours[IGNORE])."""
    lines = [HEADER]
    for i, name in [*enumerate(class_names), (IGNORE, IGNORE_NAMES[0])]:
        if ":" in name or "\n" in name:
            raise input_error("labelmap.txt", f"class name {name!r} contains ':' or a line break")
        lines.append(f"{name}:{','.join(str(c) for c in colours[i])}::")
    return "\n".join(lines) + "\n"


def read_labelmap(path: str | Path) -> tuple[list[str], dict[int, Colour]]:
    """(class names, colours) of a labelmap.txt.

    class names: background first (added with colour 0,0,0 when the file has no `background` label), then the
    other labels in file order, the ignore label left out. colours: label value -> (r, g, b) for every class id
    and for IGNORE (the ignore label's colour, else 224,224,192).
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()  # -sig: a byte-order mark is no part of a name
    except (OSError, UnicodeDecodeError) as e:
        raise input_error(path, f"cannot read label map ({e.__class__.__name__}: {e})") from None
    names: list[str] = []
    colours: dict[int, Colour] = {}
    ignore: Colour | None = None
    for n, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, rest = line.partition(":")
        name = name.strip()
        try:
            colour = tuple(int(c) for c in rest.split(":")[0].split(","))
            if len(colour) != 3 or not all(0 <= c <= 255 for c in colour):
                raise ValueError
        except ValueError:
            raise input_error(path, f"line {n}: expected name:r,g,b::, got {line.strip()!r}") from None
        if colour in colours.values() or colour == ignore:
            raise input_error(path, f"line {n}: colour {','.join(map(str, colour))} is used by two labels")
        if name.lower() in IGNORE_NAMES:
            ignore = colour
            continue
        if name in names:
            raise input_error(path, f"line {n}: label {name!r} appears twice")
        if name == "background" and names:
            raise input_error(path, f"line {n}: background must be the first label")
        colours[len(names)] = colour
        names.append(name)
    if "background" not in names:
        if (0, 0, 0) in colours.values():
            raise input_error(path, "no background label, and colour 0,0,0 belongs to another label")
        names.insert(0, "background")
        colours = {0: (0, 0, 0)} | {i + 1: c for i, c in colours.items()}

    check_class_names(path, names)
    colours[IGNORE] = ignore if ignore is not None else IGNORE_COLOUR
    return names, colours


def read_color_label_png(path: str | Path, colours: dict[int, Colour]) -> np.ndarray:
    """uint8 (H, W) labels of a mask PNG: palette or grayscale PNGs give their indices (as read_label_png);
    RGB(A) PNGs, as CVAT exports them, are mapped colour -> label value through `colours` (alpha ignored)."""
    path = Path(path)
    if not path.is_file():
        raise input_error(path, "label file is missing")
    try:
        with open_image(path) as im:
            if im.mode in ("P", "L"):
                return read_label_png(path)
            if im.mode not in ("RGB", "RGBA"):
                raise input_error(path, f"label PNG must be palette, grayscale, RGB or RGBA, got mode {im.mode}")
            rgb = np.asarray(im.convert("RGB")).astype(np.int32)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise input_error(path, f"corrupt label PNG ({e.__class__.__name__}: {e})") from None
    lookup = {_key(IGNORE_COLOUR): IGNORE} | {_key(c): v for v, c in colours.items()}
    keys, inverse = np.unique(rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2], return_inverse=True)
    values = np.zeros(len(keys), np.uint8)
    for k, key in enumerate(keys.tolist()):
        if key not in lookup:
            colour = f"{key >> 16},{key >> 8 & 255},{key & 255}"
            raise input_error(path, f"colour {colour} is not in the label map")
        values[k] = lookup[key]
    return values[inverse].reshape(rgb.shape[:2])


def _key(c: Colour) -> int:
    return c[0] << 16 | c[1] << 8 | c[2]
