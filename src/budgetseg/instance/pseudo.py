"""Instance pseudo-labels: f_theta's instances for the unlabeled pool, streamed to disk as COCO JSON. This module
alone knows its files (the pipeline, training, the export and the review order read them through
InstancePseudoLabels).

Folder layout (`folder`, RUN/pseudo):
  pred/<id>.json       one image's predicted instances ({"size": [H, W], "instances": [{class, score, rle}]})
  pseudo_labels.json   COCO instances JSON with RLE masks and scores; instances below pseudo.threshold are kept as
                       crowd regions (iscrowd 1), which training ignores, as COCO's own crowd annotations: an
                       unsure instance should teach neither "object" nor "background". Categories are the
                       dataset's class ids 1..C-1 named after its classes
  summary.json         (written by the pipeline) AP of the pseudo-labels against the pool's ground truth
Every file is written atomically; an image whose pred/ file exists is not predicted again. Under DDP each rank
turns a share of the pred/ files into annotations, and rank 0 joins them (finalize_instances).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
from pycocotools import mask as mask_utils
from tqdm import tqdm

from budgetseg.config import PseudoConfig
from budgetseg.data.coco import mask_to_rle
from budgetseg.data.sample import IGNORE, Sample, SegDataset, image_size
from budgetseg.dist import SINGLE, Dist, barrier, gather_objects, shard
from budgetseg.errors import input_error
from budgetseg.instance.matching import instance_target
from budgetseg.instance.metrics import InstanceEvaluator
from budgetseg.instance.outputs import InstanceItem, instance_item
from budgetseg.io import TMP_SUFFIX, atomic_open, write_json
from budgetseg.task import Instance

Instances = list[Instance]


def write_instances(out_dir: Path, image_id: str, size: tuple[int, int], preds: Instances) -> None:
    items = [{"class": c, "score": round(s, 5), "rle": mask_to_rle(m)} for m, c, s in preds]
    # no fsync per file, as for the semantic PNGs: thousands of them cost more than recomputing a file lost to a
    # power cut (the rename still leaves no partial file)
    write_json(out_dir / "pred" / f"{image_id}.json", {"size": list(size), "instances": items}, fsync=False)


def read_instances(path: Path) -> tuple[tuple[int, int], Instances]:
    try:
        d = json.loads(path.read_text())
        preds = [(mask_utils.decode(i["rle"]).astype(bool), int(i["class"]), float(i["score"])) for i in d["instances"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise input_error(path, f"unreadable pseudo-label file ({e.__class__.__name__}: {e})") from None
    return tuple(d["size"]), preds


def finalize_instances(
    out_dir: Path, ds: SegDataset, ids: list[str], cfg: PseudoConfig, progress: bool = True, d: Dist = SINGLE
) -> dict:
    """Write pseudo_labels.json (streamed: one image's instances in memory at a time); return the summary.

    Under DDP every rank must call it: each turns a contiguous share of `ids` into annotations in a part file
    of its own, and rank 0 joins the parts in rank order, numbering the annotations; every rank returns the
    summary. File and summary are the same as one process's."""
    ev = InstanceEvaluator(ds.class_names)
    thr = cfg.threshold or 0.0
    kept = total = scored = 0
    images = []
    first = d.rank * len(ids) // d.world  # position in `ids` of this rank's first image (dist.shard)
    part = _part_path(out_dir, d.rank)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        with open(part, "w") as f:
            bar = tqdm(shard(ids, d), desc="pseudo-label json", disable=not (progress and d.main), leave=False)
            for n, i in enumerate(bar, start=first):
                (h, w), preds = read_instances(out_dir / "pred" / f"{i}.json")
                # importers expect the image's file name; sample_id maps the entry back to the pool
                images.append(
                    {"id": n + 1, "file_name": ds.image_path(i).name, "sample_id": i, "height": h, "width": w}
                )
                k, t = _write_annotations(f, n + 1, preds, thr)
                kept, total = kept + k, total + t
                if ds.has_labels(i):  # quality only where the truth exists
                    _score_against_truth(ev, ds, i, (h, w), preds)
                    scored += 1
        parts = gather_objects(d, (images, kept, total, scored))  # also waits until every part is written
        if d.main:
            _join_parts(out_dir, ds.class_names, [im for p in parts for im in p[0]], d.world)
        barrier(d)  # rank 0 has read every part
    finally:
        part.unlink(missing_ok=True)
    kept, total, scored = (sum(p[k] for p in parts) for k in (1, 2, 3))
    summary = {
        "images": len(ids),
        "instances": total,
        "kept_instances": kept,
        "kept_fraction": kept / total if total else None,
        "score_threshold": thr,
        "scored_images": scored,  # unlabeled images with ground truth, which AP is measured on
    }
    if scored:  # every rank has the same total, so all or none of them take part in the gather
        summary.update(ev.evaluate(gather=d.world > 1))
    else:
        summary.update({k: None for k in ("ap", "ap50", "ap75", "sbd", "fbd", "dic", "abs_dic")})
    return summary


def _write_annotations(f, image: int, preds: Instances, thr: float) -> tuple[int, int]:
    """One image's instances as annotation lines of a part file (JSON without the "id" the join adds); instances
    scoring below `thr` are crowd regions. Returns (kept, total)."""
    kept = 0
    for m, c, s in preds:
        kept += s >= thr
        rle = mask_to_rle(m)
        box = [float(v) for v in mask_utils.toBbox(rle)]
        ann = {
            "image_id": image,  # "id" goes in front when the parts are joined
            "category_id": c,
            "segmentation": rle,
            "area": int(m.sum()),
            "bbox": box,
            "iscrowd": int(s < thr),
            "score": s,
        }
        f.write(json.dumps(ann) + "\n")  # one line each: JSON text holds no raw newline
    return kept, len(preds)


def _part_path(out_dir: Path, rank: int) -> Path:
    # a temp file's name: one a killed run leaves is removed when the run resumes (io.remove_stale_temp_files)
    return out_dir / f".pseudo_labels.part{rank}{TMP_SUFFIX}"


def _join_parts(out_dir: Path, class_names: list[str], images: list[dict], world: int) -> None:
    """pseudo_labels.json from the ranks' part files, streamed, annotations numbered 1, 2, ... in rank order."""
    with atomic_open(out_dir / "pseudo_labels.json", "w") as f:
        cats = [{"id": i, "name": n} for i, n in enumerate(class_names) if i > 0]
        f.write('{"categories": ' + json.dumps(cats) + ', "annotations": [')
        ann_id = 0
        for rank in range(world):
            with open(_part_path(out_dir, rank)) as part:
                for line in part:
                    ann_id += 1
                    # json.dumps of the annotation with "id" first, as its keys' order has it
                    f.write(("," if ann_id > 1 else "") + '{"id": ' + str(ann_id) + ", " + line[1:-1])
        f.write('], "images": ' + json.dumps(images) + "}\n")


def _score_against_truth(ev: InstanceEvaluator, ds: SegDataset, image_id: str, size, preds: Instances) -> None:
    """Add one image to the evaluator; the pool's ground truth measures the pseudo-labels, never trains."""
    gt = ds.load(image_id, with_image=False)
    masks = np.array([m for m, _, _ in preds], bool).reshape(-1, *size)
    classes = np.array([c for _, c, _ in preds], np.int64)
    scores = np.array([s for _, _, s in preds], np.float64)
    ignore, crowd = gt.semantic == IGNORE, gt.crowd  # crowd regions: COCO's iscrowd rule, not void
    ev.process(image_id, gt.instance_masks, gt.instance_classes, masks, classes, scores, ignore=ignore, crowd=crowd)


def load_pseudo_labels(path: Path) -> dict[str, list[tuple[dict, int, bool, float]]]:
    """sample id -> [(RLE, class id, crowd, score)] of a pseudo_labels.json, in descending score order (images
    written before sample_id existed are keyed by file_name)."""
    try:
        d = json.loads(path.read_text())
        names = {im["id"]: str(im.get("sample_id", im["file_name"])) for im in d["images"]}
        out: dict[str, list] = {n: [] for n in names.values()}
        for a in sorted(d["annotations"], key=lambda a: -a["score"]):
            item = (a["segmentation"], int(a["category_id"]), bool(a.get("iscrowd", 0)), float(a["score"]))
            out[names[a["image_id"]]].append(item)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise input_error(path, f"unreadable pseudo-label file ({e.__class__.__name__}: {e})") from None
    return out


def paint_order(decoded: list[tuple[np.ndarray, int, bool, float]], h: int, w: int):
    """Pseudo-instances of one image [(mask bool (H, W), class, crowd, score)] in load_pseudo_labels' descending
    score order -> (kept [(mask, class, score)] in paint order, their masks bool (K, H, W), ignore bool (H, W)).

    instance_target paints largest first; for equal areas the later one ends on top, so kept ones are listed least
    confident first. The crowd (below-threshold) ones are ignored only where no kept instance lies.
    """
    kept = [(m, c, s) for m, c, crowd, s in decoded if not crowd][::-1]
    masks = np.array([m for m, _, _ in kept], bool).reshape(-1, h, w)
    ignore = np.zeros((h, w), bool)
    for m, _, crowd, _ in decoded:
        if crowd:
            ignore |= m
    return kept, masks, ignore & ~masks.any(0)


@dataclass
class InstancePseudoLabels:
    """The instance pseudo-label folder `folder`. pseudo_labels.json is read once per object, when first needed."""

    folder: Path
    _loaded: dict | None = field(default=None, repr=False)  # load_pseudo_labels' dict of pseudo_labels.json
    score_name: ClassVar[str] = "instances expected wrong: sum of 1 - score (1: none found)"
    # RLE encoding and JSON hold the GIL: writer threads only contend with the loop's thread for it (an H200's
    # instance pseudo-labelling: 289-318 img/s with four of them, 392 without)
    writes_release_gil: ClassVar[bool] = False

    def todo(self, ids: list[str]) -> list[str]:
        return [i for i in ids if not (self.folder / "pred" / f"{i}.json").is_file()]

    def write(self, sample: Sample, prediction: Instances) -> None:
        write_instances(self.folder, sample.id, sample.size, prediction)

    def finalize(self, ds: SegDataset, ids: list[str], cfg: PseudoConfig, d: Dist = SINGLE) -> dict:
        return finalize_instances(self.folder, ds, ids, cfg, d=d)

    def pseudo_labels(self) -> dict[str, list[tuple[dict, int, bool, float]]]:
        """load_pseudo_labels of the folder's pseudo_labels.json (read on the first call)."""
        if self._loaded is None:
            self._loaded = load_pseudo_labels(self.folder / "pseudo_labels.json")
        return self._loaded

    def decoded(self, image_id: str, h: int, w: int, image: object = "its image") -> list[tuple]:
        """[(mask bool (H, W), class, crowd, score)] of `image` (h x w px), in descending score order."""
        out = []
        for rle, c, crowd, s in self.pseudo_labels().get(image_id, []):
            if list(rle.get("size", [])) != [h, w]:
                where = self.folder / "pseudo_labels.json"
                raise input_error(where, f"{image_id}: mask size {rle.get('size')} but {image} is {[h, w]} (HxW)")
            out.append((mask_utils.decode(rle).astype(bool), c, crowd, s))
        return out

    def target(self, image_id: str, size: tuple[int, int]) -> np.ndarray:
        """uint8 (H, W, 2) (Task.target's form) of the kept instances, largest first (equal areas: the confident on
        top); the crowd ones are ignored where no kept one lies."""
        h, w = size
        kept, masks, ignore = paint_order(self.decoded(image_id, h, w), h, w)
        return instance_target(masks, np.array([c for _, c, _ in kept], np.int64), h, w, ignore)

    def review_scores(self, ids: list[str]) -> dict[str, float]:
        """The number of each image's pseudo-instances expected wrong: the sum of 1 - score over them (the unsure
        ones included), 1 where f_theta found none (a missed object, likely)."""
        preds = self.pseudo_labels() if ids else {}
        missing = [i for i in ids if i not in preds]
        if missing:
            raise input_error(self.folder / "pseudo_labels.json", f"no entry for unlabeled image {missing[0]!r}")
        return {i: round(sum(1 - s for *_, s in preds[i]), 5) if preds[i] else 1.0 for i in ids}

    def export_item(self, pool: SegDataset, image_id: str) -> InstanceItem:
        """The kept instances as the training target paints them; the unsure ones as don't-care."""
        image = pool.image_path(image_id)
        h, w = image_size(image)
        decoded = self.decoded(image_id, h, w, image)
        kept, masks, ignore = paint_order(decoded, h, w)
        unsure = [(m, c, s) for m, c, crowd, s in decoded if crowd]
        classes, scores = [c for _, c, _ in kept], [s for _, _, s in kept]
        return instance_item(image_id, "pseudo", image, masks, classes, scores, ignore, unsure)
