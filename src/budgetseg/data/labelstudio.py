"""Label Studio JSON (tasks with brush annotations): reading corrected labels back, and the pieces exports write.

A task is {"data": {"image": URL, "sample_id": ...}, "annotations": [{"result": [...]}], "predictions": [...]}; each
region is a `brushlabels` result whose `value.rle` is the brush RLE of data/brush.py. Only annotations count as
labels (the human's); predictions are ignored, so a task without an annotation is unlabeled.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, unquote, urlparse
from xml.sax.saxutils import quoteattr

import numpy as np

from budgetseg.data.brush import brush_rle_to_mask, mask_to_brush_rle
from budgetseg.data.labelmap import IGNORE_NAMES, Colour
from budgetseg.data.sample import IGNORE, Sample, check_class_names, check_file_name, check_id, empty_instances
from budgetseg.data.voc import load_image
from budgetseg.errors import input_error

CONFIG_NAME = "labeling_config.xml"  # looked for beside the JSON file
FROM_NAME, TO_NAME = "tag", "image"  # the BrushLabels and Image tag names of labeling_config()
UPLOAD_PREFIX = re.compile(r"[0-9a-f]{8}-(.+)")  # Label Studio renames uploaded files <8 hex digits>-<name>


def uploaded_name(name: str) -> str | None:
    """The photo's own file name of a name Label Studio gave an upload (`c200f83e-a.png`: a.png), else None."""
    upload = UPLOAD_PREFIX.fullmatch(name)
    return upload.group(1) if upload else None


def labeling_config(class_names: list[str], colours: dict[int, Colour], first: int = 1) -> str:
    """Label Studio labeling config: the image and one brush label per class from `first` (1: the background left
    out, unpainted pixels are background; 0: a label set without background, every class) plus `ignore` (don't
    care), in the given colours."""
    labels = [(n, colours[i]) for i, n in enumerate(class_names) if i >= first]
    labels += [(IGNORE_NAMES[0], colours[IGNORE])]
    lines = [f'    <Label value={quoteattr(n)} background="#{r:02x}{g:02x}{b:02x}"/>' for n, (r, g, b) in labels]
    return (
        "<View>\n"
        f'  <Image name="{TO_NAME}" value="$image" zoom="true"/>\n'
        f'  <BrushLabels name="{FROM_NAME}" toName="{TO_NAME}">\n' + "\n".join(lines) + "\n  </BrushLabels>\n</View>\n"
    )


def brush_result(mask: np.ndarray, label: str, region_id: str, score: float | None = None) -> dict:
    """One brushlabels result for bool (H, W) `mask`."""
    h, w = mask.shape
    res = {
        "id": region_id,
        "from_name": FROM_NAME,
        "to_name": TO_NAME,
        "type": "brushlabels",
        "original_width": w,
        "original_height": h,
        "image_rotation": 0,
        "value": {"format": "rle", "rle": mask_to_brush_rle(mask), "brushlabels": [label]},
    }
    if score is not None:
        res["score"] = round(float(score), 5)
    return res


def read_config_labels(path: Path) -> list[str]:
    """The Label values of every BrushLabels tag of a labeling config, in file order."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        raise input_error(path, f"cannot read labeling config ({e.__class__.__name__}: {e})") from None
    return [lab.get("value", "") for tag in root.iter("BrushLabels") for lab in tag.iter("Label")]


def latest_annotation(task: dict) -> dict | None:
    """The last-updated annotation that was not cancelled (ties: the later one in the list), or None."""
    anns = [(k, a) for k, a in enumerate(task.get("annotations") or []) if isinstance(a, dict)]
    done = [(a.get("updated_at") or a.get("created_at") or "", k, a) for k, a in anns if not a.get("was_cancelled")]
    return max(done, key=lambda d: d[:2])[2] if done else None


def image_name(url: str) -> str:
    """File name of a task's image URL: /data/local-files/?d=dir/a.jpg, /data/upload/1/a.jpg, http://.../a.jpg."""
    parsed = urlparse(url)
    d = parse_qs(parsed.query).get("d")
    return PurePosixPath(d[0] if d else unquote(parsed.path)).name


class LabelStudioDataset:
    """Label Studio JSON export (or an import file, e.g. budgetseg's tasks.json) plus a folder of its images.

    Sample ids: each task's data.sample_id, else its image file's stem. An image is image_root/<file name of
    data.image>, else that name without Label Studio's upload prefix (and then so is its id: `c200f83e-a.png`
    uploaded from the folder where a.png lies has id `a`, so that folder counts it as labelled). Labels come from
    each task's latest non-cancelled annotation (predictions never count; a task without one is unlabeled:
    `has_labels` is False and `load` raises). Brush regions paint the semantic mask: `ignore`/`void` regions as 255
    first, `background` regions as 0, then the other regions, largest first so small ones stay visible; every region
    of a class is one instance. Class names: `class_names`, else background + the BrushLabels of labeling_config.xml
    beside the JSON (file order), else background + the labels the annotations use, sorted by name. background=False
    (a label set without background, as budgetseg exports one): no background class is added, and unpainted pixels
    read as 255 (unlabelled).
    """

    def __init__(
        self,
        json_path: str | Path,
        image_root: str | Path,
        class_names: list[str] | None = None,
        background: bool = True,
    ):
        self.json_path = path = Path(json_path)
        self.image_root = Path(image_root)
        try:
            tasks = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise input_error(path, "Label Studio JSON is missing") from None
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise input_error(path, f"cannot read Label Studio JSON ({e.__class__.__name__}: {e})") from None
        if not isinstance(tasks, list):
            raise input_error(path, "expected a list of tasks")
        self.tasks: dict[str, dict] = {}
        self.labels: dict[str, dict | None] = {}  # id -> the annotation that labels it
        for k, task in enumerate(tasks):
            data = task.get("data") if isinstance(task, dict) else None
            if not isinstance(data, dict) or not isinstance(data.get("image"), str):
                raise input_error(path, f"task {k}: needs data.image (a URL or path)")
            # an uploaded photo's id is its own name's stem, without the upload prefix, as in the photos' folder
            sid = str(data.get("sample_id") or self.resolve(image_name(data["image"])).stem)
            check_id(path, sid, f"task {k}: ")  # sample ids name outputs: pseudo-labels, exported files
            check_file_name(path, image_name(data["image"]), f"task {k}: ")
            if sid in self.tasks:
                raise input_error(path, f"task {k}: sample id {sid!r} appears twice")
            self.tasks[sid] = task
            self.labels[sid] = latest_annotation(task)
        self.ids = list(self.tasks)
        for sid, task in list(self.tasks.items()):  # the prefixed id older runs' splits name still finds its task
            old = Path(image_name(task["data"]["image"])).stem
            if "sample_id" not in task["data"] and old not in self.tasks:
                self.tasks[old], self.labels[old] = task, self.labels[sid]
        self.has_instances = True  # every brush region is an instance
        self.background = background
        self.class_names = list(class_names) if class_names is not None else self._class_names()
        check_class_names(path if class_names is None else "class_names", self.class_names, background)
        self._class_of = {n: i for i, n in enumerate(self.class_names)} | {n: IGNORE for n in IGNORE_NAMES}
        if not background:  # a `background` brush, where no class is one, paints unlabelled pixels (CVAT's black too)
            self._class_of.setdefault("background", IGNORE)

    def _class_names(self) -> list[str]:
        config = self.json_path.parent / CONFIG_NAME
        if config.is_file():
            names = read_config_labels(config)
        else:
            names = sorted({lab for sid in self.ids for _, lab, _ in self._regions(sid)})
        names = [n for n in names if n != "background" and n.lower() not in IGNORE_NAMES]
        return ["background", *names] if self.background else names

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Sample:
        return self.load(self.ids[index])

    def image_path(self, image_id: str) -> Path:
        return self.resolve(image_name(self.tasks[image_id]["data"]["image"]))

    def resolve(self, name: str) -> Path:
        """The image file of a task's image name: image_root/<name>, else that name without Label Studio's upload
        prefix where only that file exists."""
        path, own = self.image_root / name, uploaded_name(name)
        if not path.is_file() and own and (self.image_root / own).is_file():
            return self.image_root / own
        return path

    def has_labels(self, image_id: str) -> bool:
        return self.labels[image_id] is not None

    def _regions(self, image_id: str) -> list[tuple[dict, str, str]]:
        """(result, label name, where) of each brush region of the id's annotation."""
        ann = self.labels[image_id]
        out = []
        for k, res in enumerate((ann.get("result") or []) if ann else []):
            where = f"task {image_id!r}, result {k}"
            kind = str(res.get("type", "")).lower() if isinstance(res, dict) else ""
            if kind != "brushlabels":
                if kind.endswith("labels"):  # a region we cannot paint: losing it silently would lose a correction
                    raise input_error(self.json_path, f"{where}: {kind} regions are not supported (brushlabels only)")
                continue
            labels = (res.get("value") or {}).get("brushlabels") or []
            if len(labels) != 1:
                raise input_error(self.json_path, f"{where}: a brush region needs exactly one label, got {labels}")
            out.append((res, str(labels[0]), where))
        return out

    def load(self, image_id: str, with_image: bool = True) -> Sample:
        if self.labels[image_id] is None:
            raise input_error(self.json_path, f"task {image_id!r} has no annotation (unlabeled)")
        image_path = self.image_path(image_id)
        image = load_image(image_path, with_image)
        h, w = image.shape[:2]
        semantic = np.full((h, w), 0 if self.background else IGNORE, np.uint8)  # what no brush paints
        masks, classes = [], []
        for res, label, where in self._regions(image_id):
            if label not in self._class_of and label.lower() not in IGNORE_NAMES:
                raise input_error(self.json_path, f"{where}: label {label!r} is not a class ({self.class_names})")
            value = res["value"]
            if value.get("format", "rle") != "rle" or (res.get("original_width"), res.get("original_height")) != (w, h):
                problem = f"{where}: expected an RLE brush of {w}x{h} (image {image_path.name}), got "
                got = f"{value.get('format')} {res.get('original_width')}x{res.get('original_height')}"
                raise input_error(self.json_path, problem + got)
            try:
                mask = brush_rle_to_mask(value.get("rle") or [], h, w)
            except (ValueError, TypeError) as e:
                raise input_error(self.json_path, f"{where}: bad brush RLE ({e})") from None
            cls = IGNORE if label.lower() in IGNORE_NAMES else self._class_of[label]
            if cls == IGNORE:
                semantic[mask] = IGNORE
            elif mask.any():
                masks.append(mask)
                classes.append(cls)
        first = int(self.background)  # class 0 is a class of its own without background
        for mask, cls in zip(masks, classes, strict=True):  # background brushes erase before classes paint
            if cls < first:
                semantic[mask] = 0
        keep = [k for k, c in enumerate(classes) if c >= first]
        if not keep:
            return Sample(image_id, image, semantic, *empty_instances(h, w))
        masks_arr = np.stack([masks[k] for k in keep])
        classes_arr = np.asarray([classes[k] for k in keep], np.int64)
        for k in np.argsort(-masks_arr.sum(axis=(1, 2)), kind="stable"):
            semantic[masks_arr[k]] = classes_arr[k]
        return Sample(image_id, image, semantic, masks_arr, classes_arr)
