"""Masks estimated from boxes: what a network can learn from when an annotator drew boxes instead of masks.

A box costs 7 s against 79 s for a polygon mask (cost.py), but a segmentation network trains on masks. As in
Khoreva et al., "Simple Does It" (CVPR 2017), each box is turned into a mask estimate by GrabCut (OpenCV's, a
colour model of object and surroundings iterated with a graph cut) initialised with the box, and only the part of
the estimate that is likely right is trained on: a band along the estimate's outline, and the whole box where
GrabCut finds almost nothing, are left unsure (IGNORE), as the paper's "ignore" regions are.

Boxes are (x0, y0, x1, y1) in pixels, x1 / y1 exclusive (a box of one pixel is (x, y, x + 1, y + 1)).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from budgetseg.data.sample import IGNORE, Sample

FG, UNSURE = 1, 2  # values of box_estimate's map (0: background)


@dataclass(frozen=True)
class BoxMaskOptions:
    """iterations: GrabCut's; band: px on either side of the estimate's outline left unsure; min_fill: an estimate
    covering less than this share of its box is distrusted and replaced by the inner box (the box's central
    `inner` share of each side as object, the rest of the box unsure); margin: px of context around the box
    GrabCut's colour models see (the background model learns from it)."""

    iterations: int = 5
    band: int = 2
    min_fill: float = 0.15
    inner: float = 0.5
    margin: int = 16


def boxes_of(masks: np.ndarray) -> np.ndarray:
    """Tight boxes of bool masks (K, H, W) -> int64 (K, 4) (x0, y0, x1, y1); an empty mask gives (0, 0, 0, 0)."""
    boxes = np.zeros((len(masks), 4), np.int64)
    for k, m in enumerate(masks):
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        if rows.size:
            boxes[k] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return boxes


def boxes_mask(boxes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """bool (H, W): the pixels inside any of `boxes` (B, 4)."""
    inside = np.zeros(shape, bool)
    for x0, y0, x1, y1 in boxes:
        inside[y0:y1, x0:x1] = True
    return inside


def with_labels(sample: Sample, semantic: np.ndarray, masks: np.ndarray, classes: np.ndarray) -> Sample:
    """`sample` with these labels (semantic (H, W), masks bool (K, H, W), classes (K,)) and no box-only object."""
    return replace(
        sample,
        semantic=semantic,
        instance_masks=masks,
        instance_classes=classes,
        boxes=np.zeros((0, 4), np.int64),
        box_classes=np.zeros(0, np.int64),
        void=None,
    )


def inner_box(shape: tuple[int, int], share: float) -> np.ndarray:
    """uint8 (h, w) map of a box's own pixels: its central `share` of each side FG, the rest UNSURE."""
    h, w = shape
    out = np.full((h, w), UNSURE, np.uint8)
    dy, dx = round(h * (1 - share) / 2), round(w * (1 - share) / 2)
    out[dy : h - dy, dx : w - dx] = FG
    return out


def box_estimate(image: np.ndarray, box, opts: BoxMaskOptions = BoxMaskOptions()) -> np.ndarray:
    """The mask estimate of one box on image uint8 (H, W, 3) RGB -> uint8 (H, W): 0 background, FG, UNSURE;
    nothing outside the box is FG or UNSURE. The band lies along the estimate's outline inside the box only: where
    the object meets the box's sides, a tight box already says where it ends."""
    import cv2  # OpenCV's GrabCut: a graph cut with learnt colour GMMs, more than is worth writing by hand here

    h, w = image.shape[:2]
    x0, y0, x1, y1 = (int(v) for v in box)
    out = np.zeros((h, w), np.uint8)
    if x1 - x0 < 2 or y1 - y0 < 2:  # too thin to cut: the box is all there is
        out[y0:y1, x0:x1] = UNSURE
        return out
    cx0, cy0 = max(x0 - opts.margin, 0), max(y0 - opts.margin, 0)
    cx1, cy1 = min(x1 + opts.margin, w), min(y1 + opts.margin, h)
    crop = np.ascontiguousarray(image[cy0:cy1, cx0:cx1, ::-1])  # BGR, as OpenCV wants
    mask = np.zeros(crop.shape[:2], np.uint8)
    rect = (x0 - cx0, y0 - cy0, x1 - x0, y1 - y0)
    cv2.setRNGSeed(0)  # GrabCut's GMMs start from k-means: seeded, the same box gives the same mask
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(crop, mask, rect, bgd, fgd, opts.iterations, cv2.GC_INIT_WITH_RECT)
    except cv2.error:  # no background pixels to learn from (a box filling the image): fall back below
        mask[:] = cv2.GC_BGD
    fg = np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD))[y0 - cy0 : y1 - cy0, x0 - cx0 : x1 - cx0]
    if fg.mean() < opts.min_fill:
        out[y0:y1, x0:x1] = inner_box(fg.shape, opts.inner)
        return out
    part = fg.astype(np.uint8) * FG
    if opts.band > 0:
        kernel = np.ones((2 * opts.band + 1, 2 * opts.band + 1), np.uint8)
        u8 = fg.astype(np.uint8)
        part[cv2.dilate(u8, kernel).astype(bool) & ~cv2.erode(u8, kernel).astype(bool)] = UNSURE
    out[y0:y1, x0:x1] = part
    return out


Estimator = Callable[[np.ndarray, np.ndarray, BoxMaskOptions], np.ndarray]  # box_estimate's signature


def filled_box(image: np.ndarray, box, opts: BoxMaskOptions = BoxMaskOptions()) -> np.ndarray:
    """Simple Does It's naive baseline: the whole box is the object, uint8 (H, W) as box_estimate's map. For touching
    objects of one colour (leaves) it matches whole objects better than GrabCut does (docs/results/box-masks)."""
    return _boxed(image, box, None)


def inner_only(image: np.ndarray, box, opts: BoxMaskOptions = BoxMaskOptions()) -> np.ndarray:
    """The other naive baseline: the box's central `opts.inner` share of each side is the object, the rest unsure."""
    return _boxed(image, box, opts.inner)


def _boxed(image: np.ndarray, box, inner: float | None) -> np.ndarray:
    x0, y0, x1, y1 = (int(v) for v in box)
    out = np.zeros(image.shape[:2], np.uint8)
    out[y0:y1, x0:x1] = FG if inner is None else inner_box((y1 - y0, x1 - x0), inner)
    return out


ESTIMATES: dict[str, Estimator] = {"grabcut": box_estimate, "box": filled_box, "inner": inner_only}  # data.labels


def box_labels(
    image: np.ndarray,
    boxes: np.ndarray,
    classes: np.ndarray,
    opts: BoxMaskOptions = BoxMaskOptions(),
    estimate: Estimator = box_estimate,
    background: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels from boxes (K, 4) of classes (K,) on image uint8 (H, W, 3) -> semantic uint8 (H, W) (the class where
    an estimate is FG, IGNORE where unsure, and elsewhere 0, the background, or IGNORE in a label set without one,
    whose class 0 is a class like any other), instance masks bool (K', H, W) and their classes int64 (K',), one per
    box whose estimate kept a FG pixel. Overlaps: the smaller box on top (it is the likelier occluder, and a large
    box's estimate would swallow it). `estimate`: GrabCut's box_estimate, or a baseline of the same signature
    (benchmarks/box_masks.py)."""
    h, w = image.shape[:2]
    semantic = np.full((h, w), 0 if background else IGNORE, np.uint8)
    owner = np.full((h, w), -1, np.int64)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for k in np.argsort(-area, kind="stable"):  # largest first, so the smallest is painted last
        est = estimate(image, boxes[k], opts)
        semantic[est == UNSURE] = IGNORE
        semantic[est == FG] = classes[k]
        owner[est == FG] = k
        owner[est == UNSURE] = -1
    kept = [k for k in range(len(boxes)) if (owner == k).any()]
    masks = np.stack([owner == k for k in kept]) if kept else np.zeros((0, h, w), bool)
    return semantic, masks, np.asarray(classes, np.int64)[kept]


def with_box_masks(
    sample: Sample, opts: BoxMaskOptions = BoxMaskOptions(), background: bool = True, method: str = "grabcut"
) -> Sample:
    """`sample` with its objects known by their box only (Sample.boxes) turned into mask estimates (box_labels;
    `background`: whether its label set has one; `method`: a key of ESTIMATES), appended to its instances; masks it
    already had stay on top of them. Needs the image."""
    if not len(sample.boxes):
        return sample
    semantic_b, masks_b, classes_b = box_labels(
        sample.image, sample.boxes, sample.box_classes, opts, ESTIMATES[method], background
    )
    inside = boxes_mask(sample.boxes, sample.semantic.shape)
    semantic = np.where(inside, semantic_b, sample.semantic).astype(np.uint8)
    if sample.void is not None:  # crowd, void and difficult regions stay ignored
        semantic[sample.void] = IGNORE
        masks_b = masks_b & ~sample.void
    known = sample.instance_masks
    for k in np.argsort(-known.sum(axis=(1, 2)), kind="stable"):  # as the readers paint them: largest first
        semantic[known[k]] = sample.instance_classes[k]
    masks_b = masks_b & ~known.any(axis=0)
    kept = masks_b.any(axis=(1, 2))  # an estimate wholly under known masks or void is no object
    masks = np.concatenate([known, masks_b[kept]])
    return with_labels(sample, semantic, masks, np.concatenate([sample.instance_classes, classes_b[kept]]))


def component_objects(semantic: np.ndarray, first: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The objects a semantic map (uint8 (H, W)) shows without instance labels: the 8-connected components of each
    class >= `first` -> bool masks (K, H, W) and their classes int64 (K,) (as dataset_stats counts objects)."""
    masks, classes = [], []
    for c in np.unique(semantic):
        if first <= c < IGNORE:
            comp, n = ndimage.label(semantic == c, structure=np.ones((3, 3)))
            masks += [comp == k for k in range(1, n + 1)]
            classes += [int(c)] * n
    h, w = semantic.shape
    return (np.stack(masks) if masks else np.zeros((0, h, w), bool)), np.asarray(classes, np.int64)


def boxes_only(sample: Sample, first: int = 1, boxed: set[int] | None = None) -> Sample:
    """`sample` as an annotator who drew boxes would have labelled it (the simulation): each instance mask (or,
    for labels without instances, each connected region of a class >= `first`: component_objects) replaced by its
    tight box (Sample.boxes, after the boxes it had), IGNORE inside the boxes, the rest of `semantic` as it was;
    pixels the labels ignored stay ignored once the boxes are estimated (Sample.void). `boxed`: the class ids
    the annotator boxes (None: all); the pixels of the others are unknown to such an annotator (IGNORE)."""
    masks, classes = sample.instance_masks, sample.instance_classes
    if not len(masks) and sample.labeled:
        masks, classes = component_objects(sample.semantic, first)
    boxes = boxes_of(masks)
    keep = boxes[:, 2] > boxes[:, 0]
    semantic = sample.semantic.copy()
    if boxed is not None:
        unboxed = ~np.isin(classes, list(boxed))
        semantic[masks[unboxed].any(axis=0) if unboxed.any() else np.zeros(semantic.shape, bool)] = IGNORE
        keep &= ~unboxed
    semantic[boxes_mask(boxes[keep], semantic.shape)] = IGNORE
    h, w = semantic.shape
    ignored = (sample.semantic == IGNORE) & ~boxes_mask(sample.boxes, (h, w))  # not the inside of its own boxes
    return replace(
        sample,
        semantic=semantic,
        instance_masks=np.zeros((0, h, w), bool),
        instance_classes=np.zeros(0, np.int64),
        boxes=np.concatenate([sample.boxes, boxes[keep]]),
        box_classes=np.concatenate([sample.box_classes, np.asarray(classes, np.int64)[keep]]),
        void=ignored if sample.void is None else ignored | sample.void,
    )
