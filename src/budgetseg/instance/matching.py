"""Instance targets, Hungarian matching and the RSIS loss (pure functions, no model code).

Dense instance target, uint8 / long (H, W, 2), so instance labels travel through the same crop / batch code
as semantic masks:
    channel 0: semantic class map (0 background, 1..C-1 classes, 255 ignore)
    channel 1: instance index map (0 background, 1..254 instance, 255 ignore)
A pixel counts (is "valid") where neither channel is 255.

Instance order (the order RSIS is asked to emit them in, and W-RSIS feeds classes in): by class id ascending,
then by area (valid pixels) descending, then by instance index.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from budgetseg.data.sample import IGNORE

_EPS = 1e-6
# Matching cost added per step of distance between step t and the object the emission order assigns to it,
# relative to the object count: it only breaks near-ties. Early in training every step predicts about the same
# blob (the union of all objects), so pure soft-IoU matching pairs steps with objects at random, and the
# targets flip between iterations; with the tie-break they stay consistent until the masks separate.
ORDER_TIE = 0.05


MAX_OBJECTS = 254  # instance maps are uint8: 0 no object, 1..254 objects, 255 ignored


def instance_target(
    masks: np.ndarray, classes: np.ndarray, h: int, w: int, ignore: np.ndarray | None = None
) -> np.ndarray:
    """uint8 (H, W, 2) target from bool masks (K, H, W) and class ids (K,); `ignore` bool (H, W) -> 255.

    Instance index k + 1 is the k-th mask. Masks are painted largest first (pixel area; on ties later over earlier), so
    where they overlap a smaller object on top of a larger one stays visible. At most 254 instances.
    """
    if len(masks) > MAX_OBJECTS:
        raise ValueError(f"the uint8 instance map holds at most {MAX_OBJECTS} instances, got {len(masks)}")
    if len(masks) != len(classes):
        raise ValueError(f"{len(masks)} masks but {len(classes)} classes")
    out = np.zeros((h, w, 2), np.uint8)
    areas = np.array([np.count_nonzero(m) for m in masks], np.int64)
    for k in np.argsort(-areas, kind="stable"):
        out[masks[k]] = (classes[k], k + 1)
    if ignore is not None:
        out[ignore] = IGNORE
    return out


def _valid(target: Tensor) -> Tensor:
    return (target[..., 0] != IGNORE) & (target[..., 1] != IGNORE)


def _instance_ids(target: Tensor) -> Tensor:
    """Instance indices (long (K,), unordered) with at least one valid pixel in target (H, W, 2)."""
    ids = torch.unique(target[..., 1][_valid(target)])
    return ids[ids > 0]


def instances_from_target(target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """target long (H, W, 2) -> (masks bool (K, H, W), classes long (K,), valid bool (H, W)).

    Masks hold the valid pixels of each instance; its class is the majority semantic class under them.
    Instances are in the module's order (class id, then area descending, then index).
    """
    valid = _valid(target)
    ids = _instance_ids(target)
    masks = (target[..., 1][None] == ids[:, None, None]) & valid
    classes = [int(torch.bincount(target[..., 0][m]).argmax()) for m in masks]
    areas = masks.flatten(1).sum(1).tolist()
    order = sorted(range(len(ids)), key=lambda k: (classes[k], -areas[k], int(ids[k])))
    cls = torch.tensor([classes[k] for k in order], dtype=torch.long, device=target.device)
    return masks[order], cls, valid


def steps_for(target: Tensor, max_steps: int) -> int:
    """Steps to run RSIS for on targets (B, H, W, 2): the largest instance count + 1, so the objectness
    flag also sees a negative, capped at max_steps (then crowded images are only partly matched)."""
    k_max = max((len(_instance_ids(t)) for t in target), default=0)
    return min(max_steps, k_max + 1)


def curriculum_steps(progress: float, max_steps: int, span: float) -> int:
    """Step cap at `progress` (fraction of training done) under RSIS's curriculum: 1 step at the start, growing
    linearly to max_steps once `span` of the training is done (span 0: no curriculum). One step breaks the
    symmetry that stalls RSIS: a single step is matched to whichever object it covers best, so it learns to
    pick one object instead of the union of all; later steps then learn to take the others."""
    if span <= 0 or progress >= span:
        return max_steps
    return min(max_steps, 1 + int(progress / span * max_steps))


def soft_iou(pred_probs: Tensor, gt: Tensor, valid: Tensor) -> Tensor:
    """Pairwise soft IoU (T, K) of probabilities (T, H, W) and float masks (K, H, W) over valid (H, W) pixels:
    sum(p g) / sum(p + g - p g). Two empty masks score 0."""
    v = valid.to(pred_probs.dtype).flatten()
    p = pred_probs.flatten(1) * v
    g = gt.to(pred_probs.dtype).flatten(1) * v
    inter = p @ g.T
    union = p.sum(1)[:, None] + g.sum(1)[None, :] - inter
    return inter / union.clamp(min=_EPS)


def match(pred_probs: Tensor, gt: Tensor, valid: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Hungarian matching of the first K steps of pred_probs (T, H, W) to the K masks gt (K, H, W), maximising
    the total soft IoU. As in RSIS, the sequence must emit its K objects first, then stop. With T < K only T
    objects are matched. Returns (pred_idx, gt_idx), int arrays of equal length, sorted by pred_idx."""
    k = len(gt)
    with torch.no_grad():
        iou = soft_iou(pred_probs[:k], gt, valid)
    return _assign(iou)


def _assign(
    iou: Tensor, order: np.ndarray | None = None, allowed: Tensor | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Hungarian assignment of steps (rows) to objects (columns) maximising soft IoU (T, K). order (K,): the step
    each object is due at, which breaks near-ties (ORDER_TIE); allowed bool (T, K): pairs that may match at all
    (W-RSIS: a step only takes an object of the class it was given)."""
    cost = 1.0 - iou.detach().float().cpu().numpy()
    if order is not None:
        t, k = cost.shape
        cost = cost + ORDER_TIE * np.abs(np.arange(t)[:, None] - order[None, :]) / max(1, k)
    if allowed is not None:
        cost = cost + 2.0 * (~allowed).cpu().numpy()  # more than any IoU can win back
    pred_idx, gt_idx = linear_sum_assignment(cost)
    return pred_idx.astype(np.int64), gt_idx.astype(np.int64)


def emission_order(masks: Tensor, classes: Tensor, by_class: bool) -> np.ndarray:
    """(K,) step at which each object (masks (K, H, W), classes (K,)) is due: largest first, or with by_class
    (W-RSIS, which is given the classes in ascending order) by class id, then largest first."""
    areas = masks.flatten(1).sum(1).tolist()
    keys = [((int(c) if by_class else 0), -a, k) for k, (c, a) in enumerate(zip(classes.tolist(), areas, strict=True))]
    order = np.empty(len(keys), np.int64)
    order[[k for *_, k in sorted(keys)]] = np.arange(len(keys))
    return order


def balanced_bce(logits: Tensor, target: Tensor) -> Tensor:
    """Binary cross-entropy of logits (T,) against 0/1 target (T,), positives and negatives each contributing
    half (or all, when only one kind is present) whatever their counts."""
    per = F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), reduction="none")
    pos = target > 0
    kinds = [m for m in (pos, ~pos) if m.any()]
    return sum(per[m].mean() for m in kinds) / len(kinds)


def rsis_loss(
    out: dict[str, Tensor],
    target: Tensor,
    weight: Tensor,
    mask_w: float = 1.0,
    class_w: float = 0.1,
    stop_w: float = 0.5,
    bce_w: float = 0.0,
    terms: dict[str, Tensor] | None = None,
) -> Tensor:
    """RSIS loss of model outputs (masks (B, T, H, W), classes (B, T, C), stop (B, T) logits) against targets
    long (B, H, W, 2); each image's loss is scaled by weight (B,), then the batch mean is taken.

    Per image with K objects: the first min(K, T) steps are Hungarian-matched to objects on soft IoU; loss =
    mask_w * mean (1 - soft IoU) + class_w * cross-entropy of the matched steps' classes + stop_w * balanced
    BCE of the objectness flags (1 for the first K steps, 0 after) + bce_w * pixelwise BCE of the matched masks
    over valid pixels. With K = 0 only the flag term remains.
    Run the model for steps_for(target, max_steps) steps, so the flag gets a 0 target. Near-ties in the
    matching go to the emission order (`emission_order`). With out["given"] long (B, T), the classes a W-RSIS
    decoder was fed, a step is only matched to an object of its given class. `terms`, when given, is filled with
    each weighted term's batch mean (detached: mask, class, stop, bce), for the training log.
    """
    losses, parts = [], []
    given = out.get("given")
    for b in range(target.shape[0]):
        gt, classes, valid = instances_from_target(target[b])
        k = len(gt)
        steps = out["stop"].shape[1]
        part = {"stop": stop_w * balanced_bce(out["stop"][b], torch.arange(steps, device=target.device) < k)}
        if k:
            iou = soft_iou(torch.sigmoid(out["masks"][b, :k].float()), gt, valid)
            allowed = given[b, :k, None] == classes[None, :] if given is not None else None
            pi, gi = _assign(iou, emission_order(gt, classes, given is not None), allowed)
            part["mask"] = mask_w * (1.0 - iou[pi, gi]).mean()
            if bce_w:
                logits = out["masks"][b, torch.as_tensor(pi, device=target.device)].float()
                per_px = F.binary_cross_entropy_with_logits(logits, gt[gi].to(logits.dtype), reduction="none")
                part["bce"] = bce_w * per_px[:, valid].mean()
            part["class"] = class_w * F.cross_entropy(out["classes"][b, pi].float(), classes[gi])
        losses.append(sum(part.values()) * weight[b])
        parts.append({name: v.detach() * weight[b] for name, v in part.items()})
    if terms is not None:
        for name in ("mask", "class", "stop", "bce"):
            terms[name] = sum(p.get(name, torch.zeros(())) for p in parts) / len(parts)
    # Every head takes part, with weight 0 where no object was matched: under DDP each rank must give every
    # parameter a gradient, also a rank whose crops hold no object.
    unused = out["masks"].float().sum() + out["classes"].float().sum()
    return torch.stack(losses).mean() + 0.0 * unused
