"""The CVPPP leaf-segmentation challenge's figures (Scharr et al. 2016): SBD, FBD, DiC and |DiC|.

Per image, with the predicted objects La and the true objects Lb, as the challenge's MATLAB scripts define them
(src/CVPPP/ of the RSIS repository: DiceScore.m, BestScore.m, SymmetricBestDice.m, FGBGDice.m, DiffFGLabels.m,
AbsDiffFGLabels.m):
- Dice(A, B) = 2 |A n B| / (|A| + |B|).
- BestDice(La, Lb) = the mean over the objects of La of each one's best Dice with any object of Lb (one object of
  Lb may be the best match of several); 0 when La has no object, and an object's best is 0 when Lb has none.
- SBD = min(BestDice(La, Lb), BestDice(Lb, La)): so 0 when either side has no object, both sides included.
- FBD = Dice of the predicted foreground (the union of the predicted objects) with the true foreground.
  FGBGDice.m divides 0 by 0 when both are empty: such an image has no FBD and is left out of the set's mean.
- DiC = #predicted objects - #true objects (signed, as DiffFGLabels.m); |DiC| its absolute value.
Over a set each is the mean over images; |DiC| is the mean of the per-image absolute values, not |mean DiC|.

Where the challenge (one class, label images, no void) says nothing, budgetseg's rules:
- One label image per side. Predictions may overlap, a label image cannot: they are painted in ascending score
  (stable: of equal scores the later one ends on top), so the most confident lies on top, as in the previews
  (InstanceTask.score). Every prediction handed over is painted, whatever its score (no threshold). A predicted
  object is a label that keeps a pixel: one hidden wholly under more confident ones counts nowhere, not in DiC
  either. True masks are taken as given (they may overlap; CVPPP's do not).
- Class-agnostic: the challenge has one class (leaf); objects of every class are pooled.
- Void pixels and crowd regions are don't-care: cut out of every true and predicted mask first, so they count
  neither for nor against any Dice or foreground; an object left without a pixel is no object.
- A set without any true object has no SBD (None): every image would score 0 by the convention above.
"""

from __future__ import annotations

import math

import numpy as np


def paint(masks: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """bool (P, H, W) masks and (P,) scores -> int32 (H, W) label image: 0 where no mask lies, k + 1 where mask k is
    on top. Painted in ascending score (stable), so the most confident ends on top."""
    labels = np.zeros(masks.shape[1:], np.int32)
    for k in np.argsort(scores, kind="stable"):
        labels[masks[k]] = k + 1
    return labels


def best_dice(dice: np.ndarray) -> float:
    """BestDice of the rows' objects against the columns' from their (M, N) Dice matrix; 0 when M or N is 0."""
    return float(dice.max(axis=1).mean()) if dice.size else 0.0


def image_scores(
    gt_masks: np.ndarray, pred_masks: np.ndarray, pred_scores: np.ndarray, ignore: np.ndarray | None = None
) -> dict:
    """One image's {"sbd": float, "fbd": float | None, "predicted": int, "true": int} (object counts; DiC is their
    difference). gt_masks bool (K, H, W); pred_masks bool (P, H, W) with pred_scores (P,); ignore bool (H, W):
    don't-care pixels (void, crowd regions), cut out of every mask."""
    labels = paint(pred_masks, pred_scores)
    if ignore is not None:
        labels[ignore] = 0
        gt_masks = gt_masks & ~ignore
    gt_masks = gt_masks[gt_masks.any(axis=(1, 2))]
    # Painted labels never overlap, so one bincount per true object gives its overlap with every predicted one.
    pred_sizes = np.bincount(labels.ravel(), minlength=len(pred_masks) + 1)[1:]
    shown = np.flatnonzero(pred_sizes)  # the label image's objects
    overlap = np.zeros((len(gt_masks), len(shown)))
    for i, m in enumerate(gt_masks):
        overlap[i] = np.bincount(labels[m], minlength=len(pred_masks) + 1)[1:][shown]
    gt_sizes = gt_masks.sum(axis=(1, 2))
    dice = 2 * overlap / (gt_sizes[:, None] + pred_sizes[shown][None, :])  # (K', P'): every object has a pixel
    fg_pred, fg_gt = labels > 0, gt_masks.any(axis=0)
    fg_sizes = int(fg_pred.sum()) + int(fg_gt.sum())
    return {
        "sbd": min(best_dice(dice), best_dice(dice.T)),
        "fbd": 2 * int((fg_pred & fg_gt).sum()) / fg_sizes if fg_sizes else None,
        "predicted": len(shown),
        "true": len(gt_masks),
    }


def mean(values: list[float]) -> float:
    """The mean, the same in any order (fsum rounds once): images reach it in another order under DDP."""
    return math.fsum(values) / len(values)


def summarize(per_image: list[dict]) -> dict:
    """The set's {"sbd", "fbd", "dic", "abs_dic", "fbd_images"} from image_scores' dicts: means over images (FBD over
    the fbd_images that define it); None where undefined, with a "note" saying why."""
    diff = np.array([s["predicted"] - s["true"] for s in per_image])
    fbd = [s["fbd"] for s in per_image if s["fbd"] is not None]
    has_truth = any(s["true"] for s in per_image)
    res = {
        "sbd": mean([s["sbd"] for s in per_image]) if has_truth else None,
        "fbd": mean(fbd) if fbd else None,
        "dic": float(diff.mean()) if len(diff) else None,
        "abs_dic": float(np.abs(diff).mean()) if len(diff) else None,
        "fbd_images": len(fbd),
    }
    if not per_image:
        notes = ["no image: SBD, FBD and DiC undefined"]
    else:
        notes = [] if has_truth else ["no true object: SBD undefined (0 on every image by the challenge's rule)"]
        notes += [] if fbd else ["no foreground on either side of any image: FBD undefined"]
    return res | ({"note": "; ".join(notes)} if notes else {})
