"""How good are masks estimated from boxes? Boxes drawn from a dataset's true instance masks (the simulated
annotator of issue 37), turned into masks by boxmask.py (GrabCut inside each box, unsure band), scored against the
true masks; beside Simple Does It's two naive baselines: the filled box, and the inner box (its central half of
each side as object, the rest of the box unsure).

Per method: mIoU over the classes (background included where the label set has one) on the pixels the method
labels (IGNORE left out, as training leaves them out), the share of pixels it leaves unsure, and the mean IoU of
each true object with the estimate that overlaps it most (unsure pixels counted as not the object), and the same
on the pixels the method labels. Prints a table and, with --json, the figures.

    .venv/bin/python benchmarks/box_masks.py --format cvppp --root ../shared/data/cvppp_a1 --limit 24
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from tqdm import tqdm

from budgetseg.data.boxmask import ESTIMATES, BoxMaskOptions, box_labels, boxes_of, component_objects
from budgetseg.data.readers import open_dataset
from budgetseg.data.sample import IGNORE, first_class


def score(ds, ids: list[str], method: str, num_classes: int) -> dict:
    """{"miou", "unsure", "object_iou", "object_iou_labelled"} of one method (grabcut | box | inner) over the
    images `ids` of `ds`."""
    conf = np.zeros((num_classes, num_classes), np.int64)
    unsure = total = 0
    ious: list[float] = []
    sure_ious: list[float] = []
    for i in tqdm(ids, desc=method, leave=False):
        s = ds.load(i)
        truth, classes = s.instance_masks, np.asarray(s.instance_classes, np.int64)
        if not len(truth):  # labels without instances (CamVid): each connected region of a class is an object
            truth, classes = component_objects(s.semantic, first_class(ds))
        if not len(truth):
            continue
        boxes = boxes_of(truth)
        est = ESTIMATES[method]
        sem, masks, kept = box_labels(s.image, boxes, classes, BoxMaskOptions(), est, background=ds.background)
        valid = (s.semantic != IGNORE) & (sem != IGNORE)
        pairs = num_classes * s.semantic[valid].astype(np.int64) + sem[valid]
        conf += np.bincount(pairs, minlength=num_classes**2).reshape(num_classes, num_classes)
        unsure += int((sem == IGNORE).sum())
        total += sem.size
        sure = sem != IGNORE
        for t in truth:  # each true object against the estimate that overlaps it most
            ious.append(float(max(((m & t).sum() / (m | t).sum() for m in masks), default=0.0)))
            tl = t & sure  # the same on the pixels the method labels (what training sees)
            sure_ious.append(float(max(((m & tl).sum() / ((m | tl).sum() or 1) for m in masks), default=0.0)))
    inter = np.diag(conf).astype(float)
    union = conf.sum(0) + conf.sum(1) - inter
    iou = inter[union > 0] / union[union > 0]
    out = {"miou": float(iou.mean()), "unsure": unsure / max(total, 1), "object_iou": float(np.mean(ious))}
    return out | {"object_iou_labelled": float(np.mean(sure_ious))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--format",
        required=True,
        help="a reader: cvppp, coco, voc, folders, ...; labels without instances (camvid): each region of a class",
    )
    ap.add_argument("--root", required=True, help="the dataset folder")
    ap.add_argument("--split", default=None, help="split name or file (default: the reader's)")
    ap.add_argument("--limit", type=int, default=0, help="score the first N images only (0: all)")
    ap.add_argument("--methods", default="grabcut,box,inner", help="comma-separated: grabcut, box, inner")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()
    ds = open_dataset(args.format, args.root, args.split)
    ids = ds.ids[: args.limit or None]
    rows = {}
    for method in args.methods.split(","):
        start = time.perf_counter()
        rows[method] = score(ds, ids, method, len(ds.class_names)) | {"images": len(ids)}
        rows[method]["seconds_per_image"] = (time.perf_counter() - start) / max(len(ids), 1)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    source = "instance masks" if ds.has_instances else "regions of each class (labels without instances)"
    print(f"{args.format} {args.root}: {len(ids)} images, boxes from the true {source}")
    head = "| method | mIoU on labelled pixels | unsure pixels | object IoU | object IoU on labelled pixels |"
    print(f"{head} s / image |")
    print("|---|---|---|---|---|---|")
    for method, r in rows.items():
        line = f"| {method} | {100 * r['miou']:.1f} | {100 * r['unsure']:.1f} % | {100 * r['object_iou']:.1f} |"
        print(f"{line} {100 * r['object_iou_labelled']:.1f} | {r['seconds_per_image']:.2f} |")


if __name__ == "__main__":
    main()
