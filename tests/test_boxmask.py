"""Masks from boxes (boxmask.py): GrabCut inside a box finds an object that stands out from its surroundings."""

from __future__ import annotations

import numpy as np
import pytest

from budgetseg.boxmask import FG, UNSURE, BoxMaskOptions, box_estimate, box_labels, boxes_of, inner_box
from budgetseg.data.sample import IGNORE


def disc(h: int, w: int, cy: int, cx: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A noisy grey-green background with a red disc (r 14 at (30, 30)) and a blue square (rows and columns
    40-60) that overlaps the disc's box; returns (image uint8 (72, 80, 3), true masks bool (2, 72, 80))."""
    rng = np.random.default_rng(seed)
    h, w = 72, 80
    image = (rng.normal((110, 130, 100), 12, (h, w, 3))).clip(0, 255)
    red, blue = disc(h, w, 30, 30, 14), np.zeros((h, w), bool)
    blue[40:61, 40:61] = True
    image[red] = rng.normal((200, 40, 40), 10, (red.sum(), 3)).clip(0, 255)
    image[blue] = rng.normal((40, 50, 210), 10, (blue.sum(), 3)).clip(0, 255)
    return image.astype(np.uint8), np.stack([red, blue])


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_boxes_of_are_tight_and_exclusive():
    masks = np.zeros((3, 10, 12), bool)
    masks[0, 2:5, 3:9] = True
    masks[1, 9, 11] = True
    assert boxes_of(masks).tolist() == [[3, 2, 9, 5], [11, 9, 12, 10], [0, 0, 0, 0]]


def test_grabcut_finds_the_object_in_its_box_and_leaves_its_outline_unsure():
    image, (red, _) = scene()
    assert iou(box_estimate(image, boxes_of(red[None])[0], BoxMaskOptions(band=0)) == FG, red) > 0.95
    est = box_estimate(image, boxes_of(red[None])[0])
    assert red[est == FG].mean() > 0.98 and (est[red] != 0).mean() > 0.98  # FG inside the disc, the rest unsure
    outline = red & ~disc(*red.shape, 30, 30, 11)
    assert (est[outline] == UNSURE).mean() > 0.5
    x0, y0, x1, y1 = boxes_of(red[None])[0]
    outside = np.ones_like(red)
    outside[y0:y1, x0:x1] = False
    assert not est[outside].any()  # nothing beyond the box


def test_same_box_same_mask():
    image, masks = scene()
    box = boxes_of(masks)[1]
    assert np.array_equal(box_estimate(image, box), box_estimate(image, box))


def test_a_box_grabcut_finds_nothing_in_falls_back_to_the_inner_box():
    rng = np.random.default_rng(1)
    image = rng.normal(120, 5, (40, 40, 3)).clip(0, 255).astype(np.uint8)  # no object: nothing stands out
    est = box_estimate(image, (8, 8, 32, 32), BoxMaskOptions(min_fill=0.9))
    assert np.array_equal(est[8:32, 8:32], inner_box((24, 24), 0.5))
    assert (est[14:26, 14:26] == FG).all() and est[8, 8] == UNSURE and est[:8].sum() == 0


@pytest.mark.parametrize("box", [(5, 5, 6, 20), (5, 5, 5, 5)])
def test_a_box_too_thin_to_cut_is_all_unsure(box):
    image, _ = scene()
    est = box_estimate(image, box)
    x0, y0, x1, y1 = box
    assert (est[y0:y1, x0:x1] == UNSURE).all() and est.sum() == UNSURE * (x1 - x0) * (y1 - y0)


def test_box_labels_paint_the_smaller_box_on_top_and_keep_one_instance_per_box():
    image, masks = scene()
    big = np.zeros_like(masks[0])
    big[10:70, 10:70] = True  # a box round both objects, as of a large occluded thing behind them
    boxes = boxes_of(np.stack([big, masks[0], masks[1]]))
    semantic, inst, classes = box_labels(image, boxes, np.array([1, 2, 3]))
    assert semantic.dtype == np.uint8 and set(np.unique(semantic)) <= {0, 1, 2, 3, IGNORE}
    assert (semantic[masks[0] & disc(*big.shape, 30, 30, 10)] == 2).mean() > 0.9  # the disc's core: the disc
    assert (semantic[masks[1]] == 3).mean() > 0.7  # the square's pixels: the square, not the big box
    assert classes.tolist()[-2:] == [2, 3] and len(inst) == len(classes)
    assert not (inst[:, None] & inst[None]).sum(axis=(2, 3))[~np.eye(len(inst), dtype=bool)].any()  # disjoint
