"""COCO instances JSON: reading (any category set, mapped to contiguous ids) and RLE encoding."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from budgetseg.data.sample import IGNORE, Sample, check_class_names, check_file_name, check_id, empty_instances, quoted
from budgetseg.data.voc import load_image
from budgetseg.errors import input_error


def mask_to_rle(mask: np.ndarray) -> dict:
    """bool (H, W) -> COCO compressed RLE {"size": [H, W], "counts": str} (JSON-serialisable)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def instance_annotation(
    mask: np.ndarray, image_id: int, category_id: int, ann_id: int, score: float | None = None
) -> dict:
    """A COCO annotation dict for bool (H, W) `mask`: RLE segmentation, area (pixels), bbox [x, y, w, h]."""
    rle = mask_to_rle(mask)
    ann = {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "segmentation": rle,
        "area": float(mask_utils.area(rle)),
        "bbox": [float(v) for v in mask_utils.toBbox(rle)],
        "iscrowd": 0,
    }
    if score is not None:
        ann["score"] = float(score)
    return ann


def category_map(class_names: list[str], category_ids: list[int] | None = None, first: int = 1) -> dict[int, int]:
    """Class id 1..K (class_names[0] the background) -> its COCO category id: the dataset's own (`category_ids`,
    that of class k at k - 1, as COCODataset keeps them), or k itself where the labels came with none (None).
    first=0 (a label set without background, whose class 0 is a class): class k -> category_ids[k], or k + 1."""
    if category_ids is not None:
        return dict(enumerate(category_ids, start=first))
    return {k: k + 1 - first for k in range(first, len(class_names))}


def coco_categories(class_names: list[str], category_ids: list[int] | None = None, first: int = 1) -> list[dict]:
    """COCO's `categories` of classes first..K: {"id" (category_map's), "name", "supercategory": ""}."""
    return [
        {"id": i, "name": class_names[k], "supercategory": ""}
        for k, i in category_map(class_names, category_ids, first).items()
    ]


def read_json(path: Path) -> object:
    if not path.is_file():
        raise input_error(path, "annotation file is missing")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise input_error(path, f"invalid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise input_error(path, f"cannot read JSON ({e.__class__.__name__}: {e})") from None


def box_of(path: Path, ann: dict, h: int, w: int) -> np.ndarray | None:
    """int64 (4,) (x0, y0, x1, y1) of an annotation known by its box only (a `bbox` [x, y, w, h] in px and no
    segmentation: missing, null or []), covering every pixel the box touches; None for one with a segmentation.
    A box past the image by less than a pixel (rounding) is clipped; further, or empty, is an error."""
    if ann.get("segmentation") not in (None, []) or "bbox" not in ann:
        return None
    bbox, where = ann["bbox"], f"annotation {ann.get('id')!r}"
    numbers = isinstance(bbox, list) and len(bbox) == 4
    if not numbers or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in bbox
    ):
        raise input_error(path, f"{where}: bbox must be 4 numbers [x, y, width, height], got {repr(bbox)[:60]}")
    x, y, bw, bh = bbox
    if bw <= 0 or bh <= 0:
        raise input_error(path, f"{where}: degenerate bbox {bbox} (width and height must be > 0)")
    if x <= -1 or y <= -1 or x + bw >= w + 1 or y + bh >= h + 1:
        raise input_error(path, f"{where}: bbox {bbox} lies outside its {w}x{h} image")
    x0, y0 = min(max(math.floor(x), 0), w - 1), min(max(math.floor(y), 0), h - 1)
    return np.array([x0, y0, max(min(math.ceil(x + bw), w), x0 + 1), max(min(math.ceil(y + bh), h), y0 + 1)])


def decode_segmentation(path: Path, ann: dict, h: int, w: int) -> np.ndarray:
    """bool (H, W) of an annotation's polygons, compressed RLE or uncompressed RLE (pixel coordinates)."""
    seg = ann.get("segmentation")
    where = f"annotation {ann.get('id')!r}"
    if isinstance(seg, dict):
        if list(seg.get("size", [])) != [h, w]:
            raise input_error(path, f"{where}: RLE size {seg.get('size')} differs from image size {[h, w]}")
    elif isinstance(seg, list):
        if any(not isinstance(p, list) or len(p) % 2 for p in seg):
            raise input_error(path, f"{where}: polygons must be lists of x, y pairs")
        # Fewer than 3 points encloses no area, and pycocotools would read a 4-number list as a box.
        seg = [p for p in seg if len(p) >= 6]
        if not seg:
            return np.zeros((h, w), dtype=bool)
    else:
        raise input_error(path, f"{where}: segmentation must be polygons or RLE, got {type(seg).__name__}")
    try:
        if isinstance(seg, list):
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
        elif isinstance(seg.get("counts"), list):  # uncompressed RLE
            rle = mask_utils.frPyObjects(seg, h, w)
        else:
            rle = seg
        mask = mask_utils.decode(rle)
    except Exception as e:  # pycocotools raises bare Exception, ValueError, TypeError on malformed input
        problem = f"{where}: cannot decode segmentation ({e.__class__.__name__}: {e})"
        raise input_error(path, problem) from None
    return mask.astype(bool)


class COCODataset:
    """A COCO instances JSON plus an image folder.

    Categories map to contiguous ids 1..K by ascending category id (`category_ids[k - 1]` is the COCO id of
    class k); with background=False (a label set without background, as budgetseg exports one) to 0..C-1, and
    pixels no annotation covers read as 255 (unlabelled), not as background. Sample ids are the images'
    `sample_id` (budgetseg's exports write it) or str(image id), in JSON order. Crowd annotations, and
    annotations of a category named `ignore` or `void` (which is no class), are ignore regions (255 in the
    semantic mask), not instances. Crowd regions of a class are also kept in
    `Sample.crowd`, so the instance evaluator scores them as COCO does; `ignore` / `void` regions are void.
    """

    def __init__(self, annotation_json: str | Path, image_dir: str | Path | list[Path], background: bool = True):
        """image_dir: the image folder, or candidates: the first that holds the first listed image is taken
        (else the first that exists)."""
        self.json_path = path = Path(annotation_json)
        data = read_json(path)
        if not isinstance(data, dict):
            raise input_error(path, "top level must be a JSON object")
        for key in ("images", "annotations", "categories"):
            if not isinstance(data.get(key), list):
                raise input_error(path, f"missing or non-list {key!r}")
        cats = {}
        for c in data["categories"]:
            if not isinstance(c, dict) or not isinstance(c.get("id"), int) or "name" not in c:
                raise input_error(path, f"category {_short(c)} needs an integer 'id' and a 'name'")
            if c["id"] in cats:
                raise input_error(path, f"category id {c['id']} appears twice")
            cats[c["id"]] = str(c["name"])
        dont_care = {c for c, name in cats.items() if name.lower() in ("ignore", "void")}
        self.category_ids = sorted(set(cats) - dont_care)
        if not self.category_ids or len(self.category_ids) >= IGNORE:
            got = len(self.category_ids)
            raise input_error(path, f"need 1..{IGNORE - 1} categories (besides ignore) for uint8 labels, got {got}")
        self.background = background
        self.class_names = ["background"] * background + [cats[c] for c in self.category_ids]
        check_class_names(path, self.class_names, background)
        self.label_of = {c: k for k, c in enumerate(self.category_ids, start=int(background))}

        self.images, key_of = self.read_images(path, data["images"])
        self.ids = list(self.images)
        self.image_dir = _pick_image_dir(image_dir, data["images"])
        if not self.image_dir.is_dir():
            raise input_error(self.image_dir, "image folder is missing")
        self.has_instances = True

        self.annotations: dict[str, list[dict]] = {i: [] for i in self.ids}
        for ann in data["annotations"]:
            if not isinstance(ann, dict):
                raise input_error(path, f"annotation entry {_short(ann)} is not an object")
            if "segmentation" not in ann and "bbox" not in ann:
                raise input_error(path, f"annotation {ann.get('id')!r} has no segmentation (nor a bbox)")
            image_id = key_of.get(str(ann.get("image_id")))
            if image_id is None:
                problem = f"annotation {ann.get('id')!r} names image id {ann.get('image_id')}, not in images"
                raise input_error(path, problem)
            if ann.get("category_id") not in cats:
                raise input_error(
                    path, f"annotation {ann.get('id')!r} has unknown category id {ann.get('category_id')!r}"
                )
            self.annotations[image_id].append(ann)

    @staticmethod
    def read_images(path: Path, entries: list) -> tuple[dict[str, dict], dict[str, str]]:
        """({sample id: image entry}, {str(COCO image id): sample id}). The sample id is the entry's `sample_id`
        where it has one (budgetseg's exports write it: a corrected export then names the photos as the pool
        did, so a folder of the same photos is recognised as labelled), else str(id)."""
        images: dict[str, dict] = {}
        key_of: dict[str, str] = {}
        for im in entries:
            if not isinstance(im, dict) or any(k not in im for k in ("id", "file_name", "width", "height")):
                raise input_error(path, f"image entry {_short(im)} needs id, file_name, width and height")
            sid = str(im.get("sample_id") or im["id"])
            if str(im["id"]) in key_of:
                raise input_error(path, f"image id {im['id']} appears twice")
            if sid in images:
                raise input_error(path, f"sample_id {sid} appears twice")
            check_id(path, sid)  # sample ids name outputs: pseudo-labels, exported files
            check_file_name(path, str(im["file_name"]), f"image {quoted(sid)}: ")
            images[sid], key_of[str(im["id"])] = im, sid
        return images, key_of

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Sample:
        return self.load(self.ids[index])

    def image_path(self, image_id: str) -> Path:
        return self.image_dir / str(self.images[image_id]["file_name"])

    def has_labels(self, image_id: str) -> bool:
        return True  # every image the JSON lists is labelled (an image with no annotation holds no object)

    def load(self, image_id: str, with_image: bool = True) -> Sample:
        """Instances, crowd regions and box-only objects in annotation order (empty masks dropped); the semantic
        mask paints crowd, void and box-only regions as IGNORE, then instances largest first so small objects stay
        visible on top."""
        info = self.images[image_id]
        image_path = self.image_path(image_id)
        image = load_image(image_path, with_image)
        h, w = image.shape[:2]
        if (h, w) != (info["height"], info["width"]):
            problem = f"image is {w}x{h} but {self.json_path.name} says {info['width']}x{info['height']}"
            raise input_error(image_path, problem)
        semantic = np.full((h, w), 0 if self.background else IGNORE, dtype=np.uint8)  # what no annotation covers
        masks, classes, crowd, boxes, box_classes = [], [], [], [], []
        void = np.zeros((h, w), bool)  # crowd and void regions, kept apart for box estimates (Sample.void)
        for ann in self.annotations[image_id]:
            label = self.label_of.get(ann["category_id"])  # None: an ignore / void category
            box = box_of(self.json_path, ann, h, w)
            if box is not None:  # which of its pixels are the object is unknown: ignored until estimated
                semantic[box[1] : box[3], box[0] : box[2]] = IGNORE
                if label is not None and not ann.get("iscrowd", 0):
                    boxes.append(box)
                    box_classes.append(label)
                else:  # a crowd or void box: ignored for good
                    void[box[1] : box[3], box[0] : box[2]] = True
                continue
            mask = decode_segmentation(self.json_path, ann, h, w)
            if ann.get("iscrowd", 0) or label is None:
                semantic[mask] = IGNORE
                void |= mask
                if label is not None and mask.any():
                    crowd.append((label, mask))
            elif mask.any():
                masks.append(mask)
                classes.append(label)
        known = {"boxes": np.array(boxes, np.int64).reshape(-1, 4), "box_classes": np.array(box_classes, np.int64)}
        known["void"] = void if boxes else None
        if not masks:
            return Sample(image_id, image, semantic, *empty_instances(h, w), crowd=crowd, **known)
        masks_arr = np.stack(masks)
        classes_arr = np.asarray(classes, dtype=np.int64)
        areas = masks_arr.sum(axis=(1, 2))
        for k in np.argsort(-areas, kind="stable"):
            semantic[masks_arr[k]] = classes_arr[k]
        return Sample(image_id, image, semantic, masks_arr, classes_arr, crowd=crowd, **known)


def own_category_ids(ds: object) -> list[int] | None:
    """The COCO category ids of classes 1..K of a COCO dataset (COCODataset.category_ids); None for other formats,
    whose classes are numbered 1..K already."""
    return list(ds.category_ids) if isinstance(ds, COCODataset) else None


def _pick_image_dir(image_dir: str | Path | list[Path], images: list) -> Path:
    if not isinstance(image_dir, list):
        return Path(image_dir)
    first = next((im.get("file_name") for im in images if isinstance(im, dict) and im.get("file_name")), None)
    for d in image_dir:
        if first is not None and (d / str(first)).is_file():
            return d
    return next((d for d in image_dir if d.is_dir()), image_dir[0])


def _short(obj: object) -> str:
    text = repr(obj)
    return text if len(text) <= 60 else text[:57] + "..."
