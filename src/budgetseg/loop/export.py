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
    categories: the classes, with the dataset's own category ids where the run's data is COCO (else 1..C), and
    `ignore` after the last; images carry "sample_id" and "source" (strong | pseudo);
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
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import quote

import numpy as np
from tqdm import tqdm

from budgetseg.config import RunConfig, load_config
from budgetseg.data.coco import category_map, coco_categories, instance_annotation
from budgetseg.data.labelmap import IGNORE_NAMES, labelmap_text, voc_colours
from budgetseg.data.labelstudio import brush_result, labeling_config
from budgetseg.data.pool import as_trained
from budgetseg.data.sample import IGNORE, SegDataset, encode_label_png
from budgetseg.errors import BudgetsegError, input_error
from budgetseg.io import check_run_folder, copy_image, csv_text, new_folder, write_json, write_text
from budgetseg.loop.export_html import write_html
from budgetseg.loop.review import review_order
from budgetseg.plan import open_pool_and_val
from budgetseg.splits import Split, read_split
from budgetseg.task import ExportItem, PseudoLabels, Task
from budgetseg.tasks import make_task

FORMATS = ("cvat", "coco", "labelstudio", "html")
LS_IMAGE_PREFIX = "/data/local-files/?d=images/"
IGNORE_NAME = IGNORE_NAMES[0]


def open_run(run: Path) -> tuple[RunConfig, Split]:
    """The run's configuration and split; error unless its pseudo-labels are complete (when it has any)."""
    cfg = load_config(check_run_folder(run) / "config.yaml")
    split = read_split(run / "split")
    if split.unlabeled and not (run / "pseudo" / "summary.json").is_file():
        raise input_error(run, "has no finished pseudo-labels (pseudo/summary.json); run `budgetseg pseudo-label`")
    return cfg, split


def strong_item(pool: SegDataset, image_id: str, task: Task) -> ExportItem:
    """The dataset's own labels of `image_id`, as the task exports them."""
    return task.export_item(pool.load(image_id, with_image=False), pool.image_path(image_id))


def iter_items(task: Task, labels: PseudoLabels, pool: SegDataset, split: Split) -> Iterator[ExportItem]:
    """Strong images, then pseudo-labelled ones (from the pseudo-label folder `labels`), one at a time."""
    for i in split.strong:
        yield strong_item(pool, i, task)
    for i in split.unlabeled:
        yield labels.export_item(pool, i)


# ----------------------------------------------------------------------------------------------- writers


def write_png(path: Path, arr) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        encode_label_png(arr, f)


def write_cvat(folder: Path, items: Iterable[ExportItem], class_names: list[str], first: int = 1) -> list[str]:
    """The cvat layout (module doc). first=0, a label set without background: CVAT reads black as its background,
    so the label map starts with `background` (unlabelled; read back as 255 with data.background false) and class
    k is written as value k + 1 in colour k + 1."""
    names = class_names if first else ["background", *class_names]
    if len(names) > IGNORE:  # value 255 is `ignore`
        raise BudgetsegError(
            f"a CVAT export holds at most {IGNORE - 1} classes besides its background, got {len(names) - 1}"
        )
    write_text(folder / "labelmap.txt", labelmap_text(names, voc_colours(len(names))))
    ids: dict[str, list[str]] = {"strong": [], "pseudo": []}
    objects = False
    for item in items:
        copy_image(item.image, folder / "JPEGImages" / item.file_name)
        # palette = VOC palette = the label map's colours, so the PNG is both an index PNG and the right colours
        values = item.semantic if first else np.where(item.semantic == IGNORE, IGNORE, item.semantic + 1)
        write_png(folder / "SegmentationClass" / f"{item.id}.png", values)
        object_map = item.object_map()
        if object_map is not None:  # the instance task's objects
            write_png(folder / "SegmentationObject" / f"{item.id}.png", object_map)
            objects = True
        ids[item.source].append(item.id)
    write_text(
        folder / "ImageSets" / "Segmentation" / "default.txt", "".join(f"{i}\n" for i in ids["strong"] + ids["pseudo"])
    )
    for name, lines in ids.items():
        write_text(folder / f"{name}.txt", "".join(f"{i}\n" for i in lines))
    objects_dir = ["SegmentationObject"] if objects else []
    return ["labelmap.txt", "SegmentationClass", *objects_dir, "ImageSets", "JPEGImages", "strong.txt", "pseudo.txt"]


def ignore_category_id(class_names: list[str], category_ids: list[int] | None, first: int = 1) -> int:
    """The COCO category id of `ignore` in a COCO export: the one after the classes' last."""
    return max(category_map(class_names, category_ids, first).values(), default=0) + 1


def write_coco(
    folder: Path,
    items: Iterable[ExportItem],
    class_names: list[str],
    category_ids: list[int] | None = None,
    first: int = 1,
) -> list[str]:
    """The coco layout (module doc); classes keep the dataset's COCO category ids (`category_ids`; None: 1..K, or
    1..C for the C classes of a label set without background: first=0)."""
    coco_id = category_map(class_names, category_ids, first)
    ignore_id = ignore_category_id(class_names, category_ids, first)
    cats = [*coco_categories(class_names, category_ids, first)]
    cats.append({"id": ignore_id, "name": IGNORE_NAME, "supercategory": ""})
    coco_id[IGNORE] = ignore_id
    images, anns = [], []
    for n, item in enumerate(items, start=1):
        copy_image(item.image, folder / "images" / item.file_name)
        h, w = item.semantic.shape
        im = {"id": n, "file_name": item.file_name, "width": w, "height": h, "sample_id": item.id}
        images.append(im | {"source": item.source})
        for c, mask, score, crowd in item.coco_regions(len(class_names)):
            if not mask.any():
                continue
            ann = instance_annotation(mask, n, coco_id.get(c, c), len(anns) + 1, score)
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


def labelstudio_task(item: ExportItem, class_names: list[str], image_url_prefix: str) -> dict:
    """One Label Studio task: strong labels as "annotations", pseudo-labels as "predictions"."""
    names = {**dict(enumerate(class_names)), IGNORE: IGNORE_NAME}
    regions, score = item.brush_regions(len(class_names))
    result = [brush_result(m, names[c], f"r{k}", s) for k, (c, m, s) in enumerate(regions, start=1) if m.any()]
    data = {"image": image_url_prefix + quote(item.file_name), "sample_id": item.id, "source": item.source}
    if item.source == "strong":
        return {"data": data, "annotations": [{"result": result}]}
    t = {"data": data, "predictions": [{"model_version": "budgetseg", "result": result}]}
    if score is not None:
        t["predictions"][0]["score"] = score
    return t


def write_labelstudio(
    folder: Path, items: Iterable[ExportItem], class_names: list[str], image_url_prefix: str, first: int = 1
) -> list[str]:
    config = labeling_config(class_names, voc_colours(len(class_names)), first)
    write_text(folder / "labeling_config.xml", config)
    with open(folder / "tasks.json", "w", encoding="utf-8") as f:  # streamed: brush RLEs add up
        f.write("[")
        for n, item in enumerate(items):
            copy_image(item.image, folder / "images" / item.file_name)
            t = labelstudio_task(item, class_names, image_url_prefix)
            f.write(("," if n else "") + "\n" + json.dumps(t))
        f.write("\n]\n")
    return ["tasks.json", "labeling_config.xml", "images"]


# ----------------------------------------------------------------------------------------------- entry point


def review_rows(labels: PseudoLabels, ids: list[str], review: int | None) -> tuple[list[str], list[tuple]]:
    """(the pseudo-labelled ids to export: with `review` only the `review` with the most expected errors, review.csv's
    rows (id, expected errors, exported) of all of them, the most expected errors first)."""
    scores = labels.review_scores(ids)
    order = review_order(scores)
    chosen = order[:review] if review is not None else order
    return chosen, [(i, scores[i], int(k < len(chosen))) for k, i in enumerate(order)]


def write_layout(to: str, folder: Path, items: Iterable[ExportItem], names: list[str], **kw) -> list[str]:
    """The files of layout `to` in `folder`; kw: image_url_prefix (labelstudio), task (coco: its category ids; html),
    scores and pool (html)."""
    first = 1 if kw["task"].background else 0  # a label set without background exports its class 0 too
    if to == "cvat":
        return write_cvat(folder, items, names, first)
    if to == "coco":
        return write_coco(folder, items, names, kw["task"].category_ids, first)
    if to == "labelstudio":
        return write_labelstudio(folder, items, names, kw["image_url_prefix"], first)
    return write_html(folder, items, names, kw["scores"], kw["pool"], kw["task"])


def export_run(
    run: str | Path,
    to: str,
    out: str | Path,
    image_url_prefix: str = LS_IMAGE_PREFIX,
    progress: bool = False,
    review: int | None = None,
) -> dict:
    """Export run folder `run` as `to` (cvat | coco | labelstudio | html) into the new folder `out` (see the module
    docstring): its strong labels and its pseudo-labels, with `review` only the `review` with the most expected
    errors (all when there are fewer); returns a summary (run, format, task, out, strong_images, pseudo_images,
    review, files)."""
    run, out = Path(run), Path(out)
    if to not in FORMATS:
        raise BudgetsegError(f"unknown export format {to!r} (one of {', '.join(FORMATS)})")
    if review is not None and review < 1:
        raise BudgetsegError(f"review must be a positive number of images, got {review}")
    cfg, split = open_run(run)
    pool = open_pool_and_val(cfg)[0]
    names = list(pool.class_names)
    task = make_task(cfg.task, names, cfg.model, background=pool.background, category_ids=pool.category_ids)
    labels = task.pseudo_labels(run / "pseudo")
    chosen, rows = review_rows(labels, split.unlabeled, review)
    # the strong images as f_theta and g_phi trained on them: boxes (real or simulated) as their mask estimates
    mix = cfg.data.labels
    trained = as_trained(pool, split.boxes, mix.box_classes, mix.box_masks, run / "box_masks")
    split = Split(split.strong, chosen)
    items = iter_items(task, labels, trained, split)
    items = tqdm(items, total=len(split.strong) + len(split.unlabeled), desc=f"export {to}", disable=not progress)
    scores = {i: e for i, e, _ in rows}
    with new_folder(out, "exports never overwrite, choose a new folder") as tmp:
        kw = dict(image_url_prefix=image_url_prefix, task=task, scores=scores, pool=pool)
        files = write_layout(to, tmp, items, names, **kw)
        ignore = {"name": IGNORE_NAME, "index": IGNORE, "color": list(voc_colours(1)[IGNORE])}
        if to == "coco":
            ignore["category_id"] = ignore_category_id(names, task.category_ids, 1 if task.background else 0)
        manifest = {
            "run": str(run.resolve()),
            "format": to,
            "task": cfg.task,
            "class_names": names,
            "strong": split.strong,
            "pseudo": split.unlabeled,
            "ignore_label": ignore,
            "review": {"images": len(chosen), "of": len(rows), "score": labels.score_name},
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
