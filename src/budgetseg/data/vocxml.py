"""Pascal VOC detection labels: Annotations/<id>.xml, one <object> per box, as VOC, LabelImg and CVAT write them.

    <annotation><size><width>500</width><height>375</height></size>
      <object><name>dog</name><difficult>0</difficult>
        <bndbox><xmin>48</xmin><ymin>240</ymin><xmax>195</xmax><ymax>371</ymax></bndbox></object>
    </annotation>

VOC's box corners are 1-based and inclusive (a box of one pixel at the top left is 1 1 1 1), so a box covers pixel
columns xmin - 1 .. xmax - 1. Objects marked difficult are left out of training as VOC leaves them out of scoring:
their boxes are ignored regions, not objects.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from budgetseg.errors import input_error


def parse_xml(path: Path) -> ET.Element:
    """The root of an XML file from anyone: ElementTree over expat >= 2.4.1 (what Python 3.11 links) limits entity
    expansion (billion laughs, quadratic blowup) and fetches no external entity, what defusedxml guards against."""
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as e:
        raise input_error(path, f"invalid XML ({e})") from None
    except OSError as e:
        raise input_error(path, f"cannot read XML ({e.__class__.__name__})") from None


def box_corners(path: Path, obj: ET.Element, n: int, h: int, w: int) -> np.ndarray:
    """int64 (4,) (x0, y0, x1, y1) px, x1 / y1 exclusive, of the n-th object's <bndbox>."""
    where = f"object {n}"
    try:
        xmin, ymin, xmax, ymax = (float(obj.findtext(f"bndbox/{k}", "")) for k in ("xmin", "ymin", "xmax", "ymax"))
    except ValueError:
        raise input_error(path, f"{where}: bndbox needs numbers xmin, ymin, xmax, ymax") from None
    if not all(map(math.isfinite, (xmin, ymin, xmax, ymax))) or xmax < xmin or ymax < ymin:
        raise input_error(path, f"{where}: degenerate box ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g})")
    if xmin < 0 or ymin < 0 or xmax > w + 1 or ymax > h + 1:
        raise input_error(path, f"{where}: box ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}) lies outside its {w}x{h} image")
    x0, y0 = min(max(round(xmin) - 1, 0), w - 1), min(max(round(ymin) - 1, 0), h - 1)
    return np.array([x0, y0, max(min(round(xmax), w), x0 + 1), max(min(round(ymax), h), y0 + 1)], np.int64)


def read_voc_boxes(
    path: Path, class_names: list[str], size: tuple[int, int], background: bool = True
) -> tuple[np.ndarray, ...]:
    """(boxes int64 (B, 4), classes int64 (B,), ignored boxes int64 (D, 4)) of an Annotations XML for an image of
    `size` (H, W); class ids index `class_names` (not the background, where class 0 is one). An unknown class name
    is an error naming the file."""
    root, (h, w) = parse_xml(path), size
    index = {name: k for k, name in enumerate(class_names) if k or not background}
    boxes, classes, ignored = [], [], []
    for n, obj in enumerate(root.iter("object"), start=1):
        name = (obj.findtext("name") or "").strip()
        if name not in index:
            raise input_error(
                path,
                f"object {n}: class {name!r} is not one of the dataset's classes "
                "(classes.txt beside Annotations/ names them)",
            )
        box = box_corners(path, obj, n, h, w)
        if (obj.findtext("difficult") or "0").strip() == "1":
            ignored.append(box)
        else:
            boxes.append(box)
            classes.append(index[name])
    return as_boxes(boxes), np.array(classes, np.int64), as_boxes(ignored)


def as_boxes(boxes: list[np.ndarray]) -> np.ndarray:
    return np.array(boxes, np.int64).reshape(-1, 4)
