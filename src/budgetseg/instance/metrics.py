"""Instance-segmentation mask AP and the CVPPP figures, with the evaluator interface of semantic/metrics.py (reset /
process / evaluate).

Two families of numbers:
- COCO mask AP, AP50, AP75 from pycocotools' COCOeval (iouType "segm", default parameters, so at most 100
  detections per image and category count).
- AP^r at IoU 0.5, 0.6, 0.7, 0.8 as in SDS (Hariharan et al. 2014) and the RSIS paper, by the VOC detection
  rule: per class, each detection (by descending score) takes the ground truth of its class and image with the
  highest IoU, matched or not; it is a hit if that IoU reaches the threshold and that ground truth is still
  unmatched, else a false positive (a duplicate where it is matched). AP is the area under the monotone
  precision envelope (VOC all-points interpolation), averaged over the classes that have ground truth. No
  detection cap.

Crowd regions (COCO iscrowd annotations, one class each) are ground truth that is never missed and never a hit.
COCO AP gets them as iscrowd=1 annotations, so COCOeval's own rule applies: a detection that matches no
unmatched regular ground truth, but covers a crowd region of its class with intersection / detection area >=
the threshold, is ignored (neither a true nor a false positive). AP^r applies the same test to a detection
whose best regular ground truth misses the threshold (or that has none); a duplicate stays a false positive.

Void pixels (VOC's 255 borders, regions of a category named ignore / void) are don't-care, as in the VOC
instance protocol and SBD: they are removed from every ground-truth and predicted mask before anything else,
in both families, so they count neither for nor against an IoU (as in the semantic evaluator). A mask left
empty, e.g. a prediction lying wholly on a border, is dropped: there is nothing left to judge. Crowd pixels are
never void: COCO keeps them in every mask.

Beside them, the CVPPP leaf-segmentation challenge's SBD, FBD, DiC and |DiC| (instance/cvppp.py: its rules for
overlapping predictions, void and crowd pixels), from every prediction handed over, computed per image in
`process` and averaged over images in `evaluate`.
"""

from __future__ import annotations

import contextlib
import io
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from budgetseg.instance.cvppp import image_scores, summarize

AP_R_THRESHOLDS = (0.5, 0.6, 0.7, 0.8)


class InstanceEvaluator:
    """COCO mask AP / AP50 / AP75 and AP^r at 0.5..0.8. `class_names[0]` is the background, never a category.

    Keeps only RLE-compressed masks per image (a few hundred bytes each), never dense arrays.
    """

    def __init__(self, class_names: list[str]):
        self.class_names = class_names
        self.reset()

    def reset(self) -> None:
        # image id -> {"size": (H, W), "gt": [(class, rle)], "crowd": [(class, rle)], "pred": [(class, score, rle)]}
        self.records: dict[str, dict] = {}

    def process(
        self,
        image_id: str,
        gt_masks: np.ndarray | torch.Tensor,
        gt_classes: np.ndarray | torch.Tensor,
        pred_masks: np.ndarray | torch.Tensor,
        pred_classes: np.ndarray | torch.Tensor,
        pred_scores: np.ndarray | torch.Tensor,
        ignore: np.ndarray | torch.Tensor | None = None,
        crowd: Sequence[tuple[int, np.ndarray | torch.Tensor]] = (),
    ) -> None:
        """Add one image. gt_masks bool (K, H, W), gt_classes (K,); pred_masks bool (P, H, W), pred_classes (P,),
        pred_scores (P,) float; classes in 1..C-1. ignore: bool (H, W), void pixels, cut out of every mask.
        crowd: [(class id, bool (H, W))], crowd regions. Crowd pixels are never void, even where `ignore` marks
        them: readers paint crowd regions 255 in the semantic map, so `semantic == IGNORE` may be passed as is.

        An image id seen before is skipped: DistributedSampler pads the last batch by repeating images.
        """
        if image_id in self.records:
            return
        gt_masks, pred_masks = _numpy(gt_masks).astype(bool), _numpy(pred_masks).astype(bool)
        gt_classes, pred_classes = _numpy(gt_classes).astype(np.int64), _numpy(pred_classes).astype(np.int64)
        pred_scores = _numpy(pred_scores).astype(np.float64)
        h, w = gt_masks.shape[1:]
        crowd_classes = np.array([int(c) for c, _ in crowd], np.int64)
        crowd_masks = np.stack([_numpy(m).astype(bool) for _, m in crowd]) if crowd else np.zeros((0, h, w), bool)
        sizes = [pred_masks.shape[1:], crowd_masks.shape[1:]] + ([tuple(ignore.shape)] if ignore is not None else [])
        if any(s != (h, w) for s in sizes):
            raise ValueError(f"{image_id}: mask sizes differ ({gt_masks.shape}, {pred_masks.shape}, {sizes})")
        if len(gt_classes) != len(gt_masks) or not len(pred_classes) == len(pred_scores) == len(pred_masks):
            raise ValueError(f"{image_id}: masks, classes and scores differ in length")
        for classes in (gt_classes, pred_classes, crowd_classes):
            if len(classes) and (classes.min() < 1 or classes.max() >= len(self.class_names)):
                raise ValueError(f"{image_id}: class ids must lie in 1..{len(self.class_names) - 1}")
        in_crowd = crowd_masks.any(axis=0)  # readers mark crowd regions 255 too: never void
        void = np.zeros((h, w), bool) if ignore is None else _numpy(ignore).astype(bool) & ~in_crowd
        gt_masks, pred_masks = gt_masks & ~void, pred_masks & ~void
        gt_keep, pred_keep = gt_masks.any(axis=(1, 2)), pred_masks.any(axis=(1, 2))
        crowd_keep = crowd_masks.any(axis=(1, 2))
        self.records[image_id] = {
            "size": (h, w),
            "gt": list(zip(gt_classes[gt_keep].tolist(), _encode(gt_masks[gt_keep]), strict=True)),
            "crowd": list(zip(crowd_classes[crowd_keep].tolist(), _encode(crowd_masks[crowd_keep]), strict=True)),
            "pred": list(
                zip(
                    pred_classes[pred_keep].tolist(),
                    pred_scores[pred_keep].tolist(),
                    _encode(pred_masks[pred_keep]),
                    strict=True,
                )
            ),
            # the CVPPP figures (every prediction painted by score, crowd regions don't-care): a few numbers
            "cvppp": image_scores(gt_masks, pred_masks, pred_scores, ignore=in_crowd),
        }

    def evaluate(self, gather: bool = True) -> dict:
        """{"ap", "ap50", "ap75", "ap_r": {"0.5": .., .., "0.8": ..}, "ap_r_mean", "images", "gt_instances",
        "predictions"}. APs in [0, 1]; 0.0 without predictions; None (and a "note") without any ground-truth
        instance (crowd regions are none). Beside them the CVPPP figures of instance/cvppp.summarize: "sbd", "fbd"
        (in [0, 1]), "dic", "abs_dic" (objects per image), "fbd_images"; None where undefined, with the note.
        gather: under DDP, merge every rank's images first (all ranks must call it then)."""
        records = self.records
        if gather and torch.distributed.is_available() and torch.distributed.is_initialized():
            parts = [None] * torch.distributed.get_world_size()
            # pickled objects: fine on gloo, and on NCCL through this rank's current GPU (init_distributed sets it)
            torch.distributed.all_gather_object(parts, records)
            records = merge_records(parts)
        res = ap_figures(records, self.class_names)
        cvppp = summarize([r["cvppp"] for r in records.values()])
        notes = [n for n in (res.pop("note", None), cvppp.pop("note", None)) if n]
        return res | cvppp | ({"note": "; ".join(notes)} if notes else {})


def merge_records(parts: list[dict]) -> dict:
    """Union of per-rank records (rank order); an image id on several ranks (sampler padding) counts once."""
    merged: dict[str, dict] = {}
    for part in parts:
        for image_id, record in part.items():
            merged.setdefault(image_id, record)
    return merged


def ap_figures(records: dict, class_names: list[str]) -> dict:
    """The AP figures and counts of InstanceEvaluator.evaluate from merged records."""
    n_gt = sum(len(r["gt"]) for r in records.values())
    n_pred = sum(len(r["pred"]) for r in records.values())
    counts = {"images": len(records), "gt_instances": n_gt, "predictions": n_pred}
    if n_gt == 0 or n_pred == 0:
        value = None if n_gt == 0 else 0.0
        ap_r = {str(t): value for t in AP_R_THRESHOLDS}
        res = {"ap": value, "ap50": value, "ap75": value, "ap_r": ap_r, "ap_r_mean": value, **counts}
        if not n_gt:
            res["note"] = "no ground-truth instance (crowd regions are none): AP is undefined"
        return res
    ap, ap50, ap75 = coco_mask_ap(records, class_names)
    ap_r = ap_r_per_threshold(records, AP_R_THRESHOLDS)
    return {
        "ap": ap,
        "ap50": ap50,
        "ap75": ap75,
        "ap_r": {str(t): v for t, v in zip(AP_R_THRESHOLDS, ap_r, strict=True)},
        "ap_r_mean": float(np.mean(ap_r)),
        **counts,
    }


def coco_mask_ap(records: dict, class_names: list[str]) -> tuple[float, float, float]:
    """(AP@[.5:.95], AP50, AP75) from COCOeval on COCO objects built in memory; NaN where COCO has none (-1).
    Crowd regions go in as iscrowd=1 ground truth, so COCOeval ignores the detections they cover."""
    images, gt_anns, dt_anns = [], [], []
    for image_index, record in enumerate(records.values(), start=1):  # COCO ids start at 1: 0 means "unmatched"
        h, w = record["size"]
        images.append({"id": image_index, "height": h, "width": w})
        objects = [(cls, rle, 0) for cls, rle in record["gt"]] + [(cls, rle, 1) for cls, rle in record["crowd"]]
        for cls, rle, iscrowd in objects:
            gt_anns.append(
                {
                    "id": len(gt_anns) + 1,
                    "image_id": image_index,
                    "category_id": cls,
                    "segmentation": rle,
                    "area": float(mask_utils.area(rle)),
                    "bbox": mask_utils.toBbox(rle).tolist(),
                    "iscrowd": iscrowd,
                }
            )
        for cls, score, rle in record["pred"]:
            # No "bbox" key: loadRes would then take area and segmentation from the box.
            dt_anns.append({"image_id": image_index, "category_id": cls, "segmentation": rle, "score": score})
    categories = [{"id": c, "name": name} for c, name in enumerate(class_names) if c > 0]
    with contextlib.redirect_stdout(io.StringIO()):  # COCO and COCOeval print progress and tables
        gt = COCO()
        gt.dataset = {"images": images, "annotations": gt_anns, "categories": categories}
        gt.createIndex()
        coco_eval = COCOeval(gt, gt.loadRes(dt_anns), iouType="segm")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return tuple(float(s) if s >= 0 else float("nan") for s in coco_eval.stats[:3])


def ap_r_per_threshold(records: dict, thresholds: tuple[float, ...]) -> list[float]:
    """AP^r per IoU threshold: mean over classes with ground truth of the per-class VOC AP."""
    gts: dict[int, dict[str, list]] = defaultdict(lambda: defaultdict(list))  # class -> image -> [rle]
    crowds: dict[int, dict[str, list]] = defaultdict(lambda: defaultdict(list))  # class -> image -> [rle]
    dets: dict[int, list] = defaultdict(list)  # class -> [(score, image, rle)]
    for image_id, record in records.items():
        for cls, rle in record["gt"]:
            gts[cls][image_id].append(rle)
        for cls, rle in record["crowd"]:
            crowds[cls][image_id].append(rle)
        for cls, score, rle in record["pred"]:
            dets[cls].append((score, image_id, rle))
    per_class = [class_ap_r(dets[c], gts[c], thresholds, crowds[c]) for c in sorted(gts)]
    return np.mean(per_class, axis=0).tolist()


def class_ap_r(
    dets: list, gts: dict[str, list], thresholds: tuple[float, ...], crowds: dict[str, list] | None = None
) -> np.ndarray:
    """(T,) VOC AP of one class by the SDS rule (module docstring). dets: [(score, image id, rle)]; gts: image
    id -> [rle] (at least one in all); crowds: image id -> [rle], the class's crowd regions."""
    crowds = crowds or {}
    n_gt = sum(len(g) for g in gts.values())
    thr = np.asarray(thresholds)
    # Per detection: IoU (G,) with each ground truth of its image, and the most it covers of a crowd region
    # (intersection / detection area); one pycocotools call per image.
    ious: list[np.ndarray] = [np.zeros(0)] * len(dets)
    cover = np.zeros(len(dets))
    by_image = defaultdict(list)
    for i, (_, image_id, _) in enumerate(dets):
        by_image[image_id].append(i)
    for image_id, idx in by_image.items():
        rles = [dets[i][2] for i in idx]
        image_ious = _iou(rles, gts.get(image_id, []), crowd=False)
        cover[idx] = _iou(rles, crowds.get(image_id, []), crowd=True).max(axis=1, initial=0.0)
        for j, i in enumerate(idx):
            ious[i] = image_ious[j]
    matched = {image_id: np.zeros((len(thr), len(g)), dtype=bool) for image_id, g in gts.items()}
    order = np.argsort([-d[0] for d in dets], kind="stable")
    tp = np.zeros((len(thr), len(dets)), dtype=bool)
    fp = np.zeros_like(tp)
    for rank, i in enumerate(order):
        iou = ious[i]
        hit = np.zeros(len(thr), dtype=bool)
        if iou.size:
            best = int(iou.argmax())  # the best ground truth overall, matched or not: never a runner-up
            hit = iou[best] >= thr
            taken = matched[dets[i][1]]
            tp[hit & ~taken[:, best], rank] = True
            taken[hit, best] = True
        # A duplicate of a matched ground truth is a false positive; a miss that covers a crowd region is ignored.
        fp[:, rank] = ~tp[:, rank] & (hit | (cover[i] < thr))
    aps = []
    for t in range(len(thr)):
        keep = tp[t] | fp[t]  # ignored detections leave the ranking
        true_pos = np.cumsum(tp[t, keep])
        aps.append(voc_ap(true_pos / n_gt, true_pos / np.arange(1, len(true_pos) + 1)))
    return np.array(aps)


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the monotone precision envelope of a (D,) recall / precision curve (all-points)."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def _encode(masks: np.ndarray) -> list[dict]:
    """bool (N, H, W) -> N compressed RLEs {"size": [H, W], "counts": bytes}."""
    if not len(masks):
        return []
    return mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))


def _numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _iou(dets: list[dict], gts: list[dict], crowd: bool) -> np.ndarray:
    """(D, G) IoU of two RLE lists; with crowd, intersection / detection area (pycocotools' iscrowd rule)."""
    if not dets or not gts:
        return np.zeros((len(dets), len(gts)))
    return np.asarray(mask_utils.iou(dets, gts, [int(crowd)] * len(gts))).reshape(len(dets), len(gts))
