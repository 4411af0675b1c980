"""export_run: a run's strong labels and pseudo-labels, told apart, in layouts annotation tools import for correction.

Every export holds what training sees. Semantic task: the strong masks and pseudo/labels/ (255 = low confidence).
Instance task: each image's instance map, as instance.instance_target paints it (strong: the dataset's objects,
the semantic mask's 255 pixels over them; pseudo: the kept instances, largest first so that small ones on top
stay visible (equal areas: the most confident on top), unsure (crowd) ones
as don't-care where no kept one lies); an instance is exported as the part of it that stays visible. Ignored
pixels never become a class: they get their own `ignore` label (colour 224,224,192, VOC's border) for an
annotator to resolve, or a COCO crowd region.

Export folder DIR (built in a hidden folder beside it and renamed at the end; never overwritten):
  export.json      manifest: run, format, task, class_names, strong and pseudo ids, the ignore label, review
  review.csv       every pseudo-labelled image of the run, those with the most errors f_theta expects first: id,
                   expected_errors (review.py), exported; with `review=K` only the first K are exported (nobody
                   corrects thousands), and the pseudo-labelled images of every layout come in this order
  cvat         CVAT "Segmentation mask 1.1" (VOC layout; zip DIR's contents to import):
    labelmap.txt                    `name:r,g,b::` lines, background first, VOC palette colours, then `ignore`
    SegmentationClass/<id>.png      palette PNGs whose palette is the label map (255 = ignore)
    SegmentationObject/<id>.png     instance task: VOC instance maps (1..K objects, 255 = ignore)
    ImageSets/Segmentation/default.txt  every id (CVAT's task subset; each file here is a subset to CVAT, so
                                    the strong / pseudo lists sit outside: an image in two would import twice)
    strong.txt, pseudo.txt          the ids of each source;  JPEGImages/<id><ext>: the images (copies)
  coco         COCO instances JSON: annotations/instances_default.json, images/<id><ext>
    categories 1..C (the classes) and C+1 `ignore`; images carry "sample_id" and "source" (strong | pseudo);
    annotations: compressed RLE, area, bbox, iscrowd, and "score" on pseudo-labels. Semantic task: one annotation
    per 8-connected component per class, and one crowd region of category `ignore` per image for its ignored
    pixels. Instance task: one per instance; unsure pseudo instances are crowd regions of their class.
  labelstudio  Label Studio: tasks.json, labeling_config.xml (BrushLabels: the classes and `ignore`), images/
    one task per image, data {"image": URL, "sample_id", "source"}; strong labels as "annotations", pseudo-labels
    as "predictions" (model_version budgetseg, score = mean confidence or mean instance score); each region a
    brush result (semantic: one per class; instance: one per instance, unsure ones labelled `ignore`).
    data.image = image_url_prefix + file name. The default, /data/local-files/?d=images/, is Label Studio's
    local-file URL: start it with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and
    LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=<DIR as an absolute path>, add a Local Files storage for <DIR>/images,
    then import tasks.json. Point the prefix elsewhere (e.g. http://host:8081/) to serve the images otherwise.
  html         a page to look at, no server or tool needed (export_html.py): index.html, images/, overlays/, truth/
Read corrected labels back with data.voc.VOCDataset + data.labelmap, data.coco.COCODataset, and
data.labelstudio.LabelStudioDataset.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np
from pycocotools import mask as mask_utils
from scipy import ndimage
from tqdm import tqdm

from budgetseg.config import RunConfig, load_config
from budgetseg.data.coco import instance_annotation
from budgetseg.data.labelmap import IGNORE_NAMES, labelmap_text, voc_colours
from budgetseg.data.labelstudio import brush_result, labeling_config
from budgetseg.data.sample import IGNORE, SegDataset, encode_label_png, image_size, read_label_png
from budgetseg.errors import BudgetsegError, input_error
from budgetseg.export_html import write_html
from budgetseg.instance import instance_target
from budgetseg.io import check_run_folder, csv_text, new_folder, write_json, write_text
from budgetseg.pipeline import open_pool_and_val
from budgetseg.pseudo_instances import load_pseudo_labels, paint_order
from budgetseg.review import SCORE_NAMES, review_order, review_scores
from budgetseg.splits import Split, read_split

FORMATS = ("cvat", "coco", "labelstudio", "html")
LS_IMAGE_PREFIX = "/data/local-files/?d=images/"
IGNORE_NAME = IGNORE_NAMES[0]


@dataclass
class Instance:
    label: int  # class id 1..C
    score: float | None  # pseudo-labels: the instance's score; strong labels: None
    mask: np.ndarray  # bool (H, W): the visible part (unsure instances: the part left ignored)


@dataclass
class Item:
    """One exported image and the labels training sees for it."""

    id: str
    source: str  # strong | pseudo
    image: Path
    semantic: np.ndarray  # uint8 (H, W): class ids, 255 = ignore
    confidence: np.ndarray | None = None  # float32 (H, W) in [0, 1]: semantic pseudo-labels' confidence
    instances: list[Instance] | None = None  # instance task: objects, each its visible part
    unsure: list[Instance] | None = None  # instance task: below-threshold pseudo instances (don't care)

    @property
    def file_name(self) -> str:
        return self.id + self.image.suffix


def open_run(run: Path) -> tuple[RunConfig, Split]:
    """The run's configuration and split; error unless its pseudo-labels are complete (when it has any)."""
    cfg = load_config(check_run_folder(run) / "config.yaml")
    split = read_split(run / "split")
    if split.unlabeled and not (run / "pseudo" / "summary.json").is_file():
        raise input_error(run, "has no finished pseudo-labels (pseudo/summary.json); run `budgetseg pseudo-label`")
    return cfg, split


# ----------------------------------------------------------------------------------------------- reading a run


def instance_item(
    image_id: str, source: str, image: Path, masks: np.ndarray, classes, scores, ignore: np.ndarray, unsure=()
) -> Item:
    """An instance-task item: masks bool (K, H, W) painted largest first (ties: later over earlier), `ignore` (H, W)
    over all, as instance.instance_target; `unsure` [(mask, class, score)] below-threshold instances."""
    h, w = ignore.shape
    target = instance_target(masks, np.asarray(classes, np.int64), h, w, ignore)
    objects = target[..., 1]
    instances = [Instance(int(c), s, objects == k) for k, (c, s) in enumerate(zip(classes, scores, strict=True), 1)]
    hidden = [Instance(int(c), s, m & ignore) for m, c, s in unsure]
    return Item(image_id, source, image, target[..., 0].copy(), instances=instances, unsure=hidden)


def strong_item(pool: SegDataset, image_id: str, task: str) -> Item:
    sample = pool.load(image_id, with_image=False)
    image = pool.image_path(image_id)
    if task == "semantic":
        return Item(image_id, "strong", image, sample.semantic)
    masks, classes = sample.instance_masks, sample.instance_classes
    return instance_item(image_id, "strong", image, masks, classes, [None] * len(classes), sample.semantic == IGNORE)


def pseudo_semantic_item(pdir: Path, pool: SegDataset, image_id: str) -> Item:
    image = pool.image_path(image_id)
    size = image_size(image)
    label_path = pdir / "labels" / f"{image_id}.png"
    semantic = read_label_png(label_path)
    if semantic.shape != size:
        raise input_error(label_path, f"pseudo-label is {semantic.shape[::-1]} (WxH) but {image} is {size[::-1]}")
    conf_path = pdir / "conf" / f"{image_id}.png"
    conf = read_label_png(conf_path).astype(np.float32) / 255 if conf_path.is_file() else None
    return Item(image_id, "pseudo", image, semantic, confidence=conf)


def pseudo_instance_item(preds: list, pool: SegDataset, image_id: str, json_path: Path) -> Item:
    image = pool.image_path(image_id)
    h, w = image_size(image)
    decoded = []
    for rle, c, crowd, s in preds:
        if list(rle.get("size", [])) != [h, w]:
            raise input_error(json_path, f"{image_id}: mask size {rle.get('size')} but {image} is {[h, w]} (HxW)")
        decoded.append((mask_utils.decode(rle).astype(bool), c, crowd, s))
    kept, masks, ignore = paint_order(decoded, h, w)
    unsure = [(m, c, s) for m, c, crowd, s in decoded if crowd]
    classes, scores = [c for _, c, _ in kept], [s for _, _, s in kept]
    return instance_item(image_id, "pseudo", image, masks, classes, scores, ignore, unsure)


def iter_items(run: Path, task: str, pool: SegDataset, split: Split, preds: dict) -> Iterator[Item]:
    """Strong images, then pseudo-labelled ones, one at a time; instance task: `preds` load_pseudo_labels' dict,
    holding every unlabeled id (review_scores, called first, checks that)."""
    for i in split.strong:
        yield strong_item(pool, i, task)
    pdir = run / "pseudo"
    if task == "semantic":
        for i in split.unlabeled:
            yield pseudo_semantic_item(pdir, pool, i)
        return
    for i in split.unlabeled:
        yield pseudo_instance_item(preds[i], pool, i, pdir / "pseudo_labels.json")


# ----------------------------------------------------------------------------------------------- writers


def copy_image(item: Item, folder: Path) -> None:
    dest = folder / item.file_name
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copyfile(item.image, dest)
    except OSError as e:
        raise input_error(item.image, f"cannot copy image ({e.__class__.__name__}: {e})") from None


def write_png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        encode_label_png(arr, f)


def mean_score(item: Item, mask: np.ndarray | None = None) -> float | None:
    """Mean confidence of a semantic pseudo-label (over `mask`), or None for strong labels."""
    if item.confidence is None:
        return None
    conf = item.confidence if mask is None else item.confidence[mask]
    return round(float(conf.mean()), 5) if conf.size else None


def write_cvat(folder: Path, items: Iterable[Item], class_names: list[str], task: str) -> list[str]:
    write_text(folder / "labelmap.txt", labelmap_text(class_names, voc_colours(len(class_names))))
    ids: dict[str, list[str]] = {"strong": [], "pseudo": []}
    for item in items:
        copy_image(item, folder / "JPEGImages")
        # palette = VOC palette = the label map's colours, so the PNG is both an index PNG and the right colours
        write_png(folder / "SegmentationClass" / f"{item.id}.png", item.semantic)
        if task == "instance":
            objects = np.zeros(item.semantic.shape, np.uint8)
            for k, inst in enumerate(item.instances, start=1):
                objects[inst.mask] = k
            objects[item.semantic == IGNORE] = IGNORE
            write_png(folder / "SegmentationObject" / f"{item.id}.png", objects)
        ids[item.source].append(item.id)
    write_text(
        folder / "ImageSets" / "Segmentation" / "default.txt", "".join(f"{i}\n" for i in ids["strong"] + ids["pseudo"])
    )
    for name, lines in ids.items():
        write_text(folder / f"{name}.txt", "".join(f"{i}\n" for i in lines))
    return ["labelmap.txt", "SegmentationClass", *(["SegmentationObject"] if task == "instance" else [])]


def semantic_regions(item: Item, num_classes: int, components: bool) -> list[tuple[int, np.ndarray]]:
    """[(class id, bool (H, W) mask)] of a semantic mask: per class (its 8-connected components with
    `components`), then its ignored pixels as (IGNORE, mask)."""
    out = []
    for c in range(1, num_classes):
        mask = item.semantic == c
        if not mask.any():
            continue
        if not components:
            out.append((c, mask))
            continue
        comp, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
        out += [(c, comp == k) for k in range(1, n + 1)]
    ignored = item.semantic == IGNORE
    return out + ([(IGNORE, ignored)] if ignored.any() else [])


def write_coco(folder: Path, items: Iterable[Item], class_names: list[str], task: str) -> list[str]:
    ignore_id = len(class_names)  # the category after the classes
    cats = [{"id": i, "name": n, "supercategory": ""} for i, n in enumerate(class_names) if i > 0]
    cats.append({"id": ignore_id, "name": IGNORE_NAME, "supercategory": ""})
    images, anns = [], []
    for n, item in enumerate(items, start=1):
        copy_image(item, folder / "images")
        h, w = item.semantic.shape
        im = {"id": n, "file_name": item.file_name, "width": w, "height": h, "sample_id": item.id}
        images.append(im | {"source": item.source})
        if task == "semantic":
            parts = semantic_regions(item, len(class_names), components=True)
            regions = [(c, m, mean_score(item, m), c == IGNORE) for c, m in parts]
        else:
            regions = [(i.label, i.mask, i.score, False) for i in item.instances]
            regions += [(i.label, i.mask, i.score, True) for i in item.unsure]
            rest = item.semantic == IGNORE  # ignored pixels no unsure instance covers (strong: the dataset's)
            for i in item.unsure:
                rest &= ~i.mask
            regions += [(IGNORE, rest, None, True)] if rest.any() else []
        for c, mask, score, crowd in regions:
            if not mask.any():
                continue
            ann = instance_annotation(mask, n, ignore_id if c == IGNORE else c, len(anns) + 1, score)
            ann["iscrowd"] = int(crowd)
            anns.append(ann)
    data = {
        "info": {"description": "budgetseg export: strong labels and pseudo-labels (images[].source)"},
        "licenses": [],
        "categories": cats,
        "images": images,
        "annotations": anns,
    }
    write_json(folder / "annotations" / "instances_default.json", data)
    return ["annotations/instances_default.json", "images"]


def write_labelstudio(
    folder: Path, items: Iterable[Item], class_names: list[str], task: str, image_url_prefix: str
) -> list[str]:
    write_text(folder / "labeling_config.xml", labeling_config(class_names, voc_colours(len(class_names))))
    names = {**dict(enumerate(class_names)), IGNORE: IGNORE_NAME}
    with open(folder / "tasks.json", "w", encoding="utf-8") as f:  # streamed: brush RLEs add up
        f.write("[")
        for n, item in enumerate(items):
            copy_image(item, folder / "images")
            if task == "semantic":
                regions = [(c, m, mean_score(item, m)) for c, m in semantic_regions(item, len(class_names), False)]
                score = mean_score(item)
            else:
                regions = [(i.label, i.mask, i.score) for i in item.instances]
                regions += [(IGNORE, i.mask, i.score) for i in item.unsure]
                rest = item.semantic == IGNORE
                for i in item.unsure:
                    rest &= ~i.mask
                regions.append((IGNORE, rest, None))
                scores = [i.score for i in item.instances + item.unsure]
                score = round(float(np.mean(scores)), 5) if item.source == "pseudo" and scores else None
            result = [brush_result(m, names[c], f"r{k}", s) for k, (c, m, s) in enumerate(regions, start=1) if m.any()]
            data = {"image": image_url_prefix + quote(item.file_name), "sample_id": item.id, "source": item.source}
            if item.source == "strong":
                t = {"data": data, "annotations": [{"result": result}]}
            else:
                t = {"data": data, "predictions": [{"model_version": "budgetseg", "result": result}]}
                if score is not None:
                    t["predictions"][0]["score"] = score
            f.write(("," if n else "") + "\n" + json.dumps(t))
        f.write("\n]\n")
    return ["tasks.json", "labeling_config.xml", "images"]


# ----------------------------------------------------------------------------------------------- entry point


def export_run(
    run: str | Path,
    to: str,
    out: str | Path,
    image_url_prefix: str = LS_IMAGE_PREFIX,
    progress: bool = False,
    review: int | None = None,
) -> dict:
    """Export run folder `run` as `to` (cvat | coco | labelstudio) into the new folder `out` (see the module
    docstring): its strong labels and its pseudo-labels, with `review` only the `review` with the most expected
    errors (all when there are fewer); returns a summary (run, format, task, out, strong_images, pseudo_images,
    review, files)."""
    run, out = Path(run), Path(out)
    if to not in FORMATS:
        raise BudgetsegError(f"unknown export format {to!r} (one of {', '.join(FORMATS)})")
    if review is not None and review < 1:
        raise BudgetsegError(f"review must be a positive number of images, got {review}")
    cfg, split = open_run(run)
    instance = cfg.task == "instance" and split.unlabeled
    preds = load_pseudo_labels(run / "pseudo" / "pseudo_labels.json") if instance else {}
    scores = review_scores(run / "pseudo", cfg.task, split.unlabeled, preds)
    order = review_order(scores)
    chosen = order[:review] if review is not None else order
    rows = [(i, scores[i], int(k < len(chosen))) for k, i in enumerate(order)]
    split = Split(split.strong, chosen)
    pool = open_pool_and_val(cfg)[0]
    names = list(pool.class_names)
    items = iter_items(run, cfg.task, pool, split, preds)
    items = tqdm(items, total=len(split.strong) + len(split.unlabeled), desc=f"export {to}", disable=not progress)
    with new_folder(out, "exports never overwrite, choose a new folder") as tmp:
        if to == "cvat":
            files = write_cvat(tmp, items, names, cfg.task)
        elif to == "coco":
            files = write_coco(tmp, items, names, cfg.task)
        elif to == "labelstudio":
            files = write_labelstudio(tmp, items, names, cfg.task, image_url_prefix)
        else:
            files = write_html(tmp, items, names, cfg.task, scores, pool)
        ignore = {"name": IGNORE_NAME, "index": IGNORE, "color": list(voc_colours(1)[IGNORE])}
        if to == "coco":
            ignore["category_id"] = len(names)
        manifest = {
            "run": str(run.resolve()),
            "format": to,
            "task": cfg.task,
            "class_names": names,
            "strong": split.strong,
            "pseudo": split.unlabeled,
            "ignore_label": ignore,
            "review": {"images": len(chosen), "of": len(order), "score": SCORE_NAMES[cfg.task]},
        }
        write_json(tmp / "export.json", manifest)
        write_text(tmp / "review.csv", csv_text([("id", "expected_errors", "exported"), *rows]))
    return {
        "run": str(run),
        "format": to,
        "task": cfg.task,
        "out": str(out),
        "strong_images": len(split.strong),
        "pseudo_images": len(split.unlabeled),
        "review": review,
        "files": ["export.json", "review.csv", *files],
    }
