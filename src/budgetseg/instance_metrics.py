"""Instance-segmentation mask AP with the evaluator interface of metrics.py (reset / process / evaluate).

Two families of numbers:
- COCO mask AP, AP50, AP75 from pycocotools' COCOeval (iouType "segm", default parameters, so at most 100
  detections per image and category count).
- AP^r at IoU 0.5, 0.6, 0.7, 0.8 as in SDS (Hariharan et al. 2014) and the RSIS paper: per class, detections
  sorted by score are greedily matched to the unmatched ground truth of the same class and image with the
  highest IoU (a hit needs IoU >= threshold); AP is the area under the monotone precision envelope
  (VOC all-points interpolation), averaged over the classes that have ground truth. No detection cap.

Ignore regions (VOC's 255 borders, COCO crowd regions): their pixels are removed from every mask, ground
truth and prediction, before anything else, so they count neither for nor against an IoU (as in the
semantic evaluator). A mask left empty, e.g. a prediction lying wholly inside a crowd region, is dropped:
there is nothing left to judge. No iscrowd annotations are made, so both AP families see the same masks.
"""

from __future__ import annotations

import contextlib
import io
from collections import defaultdict

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

AP_R_THRESHOLDS = (0.5, 0.6, 0.7, 0.8)


class InstanceEvaluator:
    """COCO mask AP / AP50 / AP75 and AP^r at 0.5..0.8. `class_names[0]` is the background, never a category.

    Keeps only RLE-compressed masks per image (a few hundred bytes each), never dense arrays.
    """

    def __init__(self, class_names: list[str]):
        self.class_names = class_names
        self.reset()

    def reset(self) -> None:
        # image id -> {"size": (H, W), "gt": [(class, rle)], "pred": [(class, score, rle)]}
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
    ) -> None:
        """Add one image. gt_masks bool (K, H, W), gt_classes (K,); pred_masks bool (P, H, W), pred_classes (P,),
        pred_scores (P,) float; classes in 1..C-1. ignore: bool (H, W), pixels that count for nothing.

        An image id seen before is skipped: DistributedSampler pads the last batch by repeating images.
        """
        if image_id in self.records:
            return
        gt_masks, pred_masks = _numpy(gt_masks).astype(bool), _numpy(pred_masks).astype(bool)
        gt_classes, pred_classes = _numpy(gt_classes).astype(np.int64), _numpy(pred_classes).astype(np.int64)
        pred_scores = _numpy(pred_scores).astype(np.float64)
        h, w = gt_masks.shape[1:]
        if pred_masks.shape[1:] != (h, w) or (ignore is not None and tuple(ignore.shape) != (h, w)):
            raise ValueError(f"{image_id}: mask sizes differ ({gt_masks.shape}, {pred_masks.shape})")
        if len(gt_classes) != len(gt_masks) or not len(pred_classes) == len(pred_scores) == len(pred_masks):
            raise ValueError(f"{image_id}: masks, classes and scores differ in length")
        for classes in (gt_classes, pred_classes):
            if len(classes) and (classes.min() < 1 or classes.max() >= len(self.class_names)):
                raise ValueError(f"{image_id}: class ids must lie in 1..{len(self.class_names) - 1}")
        if ignore is not None:
            keep = ~_numpy(ignore).astype(bool)
            gt_masks, pred_masks = gt_masks & keep, pred_masks & keep
        gt_keep, pred_keep = gt_masks.any(axis=(1, 2)), pred_masks.any(axis=(1, 2))
        gt_rles = _encode(gt_masks[gt_keep])
        pred_rles = _encode(pred_masks[pred_keep])
        self.records[image_id] = {
            "size": (h, w),
            "gt": list(zip(gt_classes[gt_keep].tolist(), gt_rles, strict=True)),
            "pred": list(
                zip(pred_classes[pred_keep].tolist(), pred_scores[pred_keep].tolist(), pred_rles, strict=True)
            ),
        }

    def evaluate(self, gather: bool = True) -> dict:
        """{"ap", "ap50", "ap75", "ap_r": {"0.5": .., .., "0.8": ..}, "ap_r_mean", "images", "gt_instances",
        "predictions"}. APs in [0, 1]; 0.0 without predictions; None (and a "note") without any ground-truth
        instance (crowd regions are none).
        gather: under DDP, merge every rank's images first (all ranks must call it then)."""
        records = self.records
        if gather and torch.distributed.is_available() and torch.distributed.is_initialized():
            parts = [None] * torch.distributed.get_world_size()
            # pickled objects: fine on gloo, and on NCCL through this rank's current GPU (init_distributed sets it)
            torch.distributed.all_gather_object(parts, records)
            records = merge_records(parts)
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
        ap, ap50, ap75 = coco_mask_ap(records, self.class_names)
        ap_r = ap_r_per_threshold(records, AP_R_THRESHOLDS)
        return {
            "ap": ap,
            "ap50": ap50,
            "ap75": ap75,
            "ap_r": {str(t): v for t, v in zip(AP_R_THRESHOLDS, ap_r, strict=True)},
            "ap_r_mean": float(np.mean(ap_r)),
            **counts,
        }


def merge_records(parts: list[dict]) -> dict:
    """Union of per-rank records (rank order); an image id on several ranks (sampler padding) counts once."""
    merged: dict[str, dict] = {}
    for part in parts:
        for image_id, record in part.items():
            merged.setdefault(image_id, record)
    return merged


def coco_mask_ap(records: dict, class_names: list[str]) -> tuple[float, float, float]:
    """(AP@[.5:.95], AP50, AP75) from COCOeval on COCO objects built in memory; NaN where COCO has none (-1)."""
    images, gt_anns, dt_anns = [], [], []
    for image_index, record in enumerate(records.values(), start=1):  # COCO ids start at 1: 0 means "unmatched"
        h, w = record["size"]
        images.append({"id": image_index, "height": h, "width": w})
        for cls, rle in record["gt"]:
            gt_anns.append(
                {
                    "id": len(gt_anns) + 1,
                    "image_id": image_index,
                    "category_id": cls,
                    "segmentation": rle,
                    "area": float(mask_utils.area(rle)),
                    "bbox": mask_utils.toBbox(rle).tolist(),
                    "iscrowd": 0,
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
    dets: dict[int, list] = defaultdict(list)  # class -> [(score, image, rle)]
    for image_id, record in records.items():
        for cls, rle in record["gt"]:
            gts[cls][image_id].append(rle)
        for cls, score, rle in record["pred"]:
            dets[cls].append((score, image_id, rle))
    per_class = [class_ap_r(dets[c], gts[c], thresholds) for c in sorted(gts)]
    return np.mean(per_class, axis=0).tolist()


def class_ap_r(dets: list, gts: dict[str, list], thresholds: tuple[float, ...]) -> np.ndarray:
    """(T,) VOC AP of one class. dets: [(score, image id, rle)]; gts: image id -> [rle] (at least one in all)."""
    n_gt = sum(len(g) for g in gts.values())
    thr = np.asarray(thresholds)
    t_index = np.arange(len(thr))
    # IoU rows (G_image,) per detection, one pycocotools call per image.
    rows: list[np.ndarray] = [np.zeros(0)] * len(dets)
    by_image = defaultdict(list)
    for i, (_, image_id, _) in enumerate(dets):
        by_image[image_id].append(i)
    for image_id, idx in by_image.items():
        g = gts.get(image_id, [])
        if g:
            ious = np.asarray(mask_utils.iou([dets[i][2] for i in idx], g, [0] * len(g))).reshape(len(idx), len(g))
            for j, i in enumerate(idx):
                rows[i] = ious[j]
    matched = {image_id: np.zeros((len(thr), len(g)), dtype=bool) for image_id, g in gts.items()}
    order = np.argsort([-d[0] for d in dets], kind="stable")
    tp = np.zeros((len(thr), len(dets)), dtype=bool)
    for rank, i in enumerate(order):
        iou = rows[i]
        if not iou.size:
            continue
        taken = matched[dets[i][1]]
        candidates = np.where(taken, -1.0, iou[None])  # (T, G): matched ground truth cannot match again
        best = candidates.argmax(axis=1)
        hit = candidates[t_index, best] >= thr
        taken[t_index[hit], best[hit]] = True
        tp[hit, rank] = True
    true_pos = np.cumsum(tp, axis=1)
    recall = true_pos / n_gt
    precision = true_pos / np.arange(1, len(dets) + 1)
    return np.array([voc_ap(recall[t], precision[t]) for t in t_index])


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
