"""instance/cvppp.py against a plain reading of the CVPPP challenge's scripts, on label images, and its painting rule.
The hand-computed cases through the evaluator are in test_instance_metrics.py."""

import numpy as np
import pytest

from budgetseg.instance.cvppp import best_dice, image_scores, paint, summarize


def scripts_reading(pred: np.ndarray, true: np.ndarray) -> tuple[float, float, int]:
    """(SBD, FBD, DiC) of two label images as the challenge's scripts define them: the lowest label is background,
    every label above it up to the highest is an object; Dice of two empty sets is 0 (DiceScore.m); an object's
    best Dice is 0 with no object to match and a side without objects scores 0 (BestScore.m); FBD is 0/0, NaN,
    when neither image has foreground (FGBGDice.m). Pixel by pixel, with Python sets, to stay apart from numpy."""

    def objects(lab):
        lo = lab.min()
        return [{p for p, v in np.ndenumerate(lab) if v == k} for k in range(lo + 1, lab.max() + 1)]

    def dice(x, y):
        return 2 * len(x & y) / (len(x) + len(y)) if x or y else 0.0

    def best(xs, ys):
        return sum(max([dice(x, y) for y in ys], default=0.0) for x in xs) / len(xs) if xs else 0.0

    ps, ts = objects(pred), objects(true)
    fg_p = {p for p, v in np.ndenumerate(pred) if v > pred.min()}
    fg_t = {p for p, v in np.ndenumerate(true) if v > true.min()}
    fbd = 2 * len(fg_p & fg_t) / (len(fg_p) + len(fg_t)) if fg_p or fg_t else float("nan")
    return min(best(ps, ts), best(ts, ps)), fbd, len(ps) - len(ts)


def random_labels(rng: np.random.Generator, size: int = 12) -> np.ndarray:
    """int (size, size): 0 to 5 rectangles painted over one another on background, labels 1, 2, ... consecutive
    over those left visible; the last pixel stays background so that the lowest label is background."""
    lab = np.zeros((size, size), np.int64)
    for k in range(1, rng.integers(0, 6) + 1):
        y, x = rng.integers(0, size - 2, 2)
        h, w = rng.integers(2, 7, 2)
        lab[y : y + h, x : x + w] = k
    lab[-1, -1] = 0
    return np.unique(lab, return_inverse=True)[1].reshape(size, size)


def masks_of(lab: np.ndarray) -> np.ndarray:
    """bool (K, H, W): the objects 1..K of a label image."""
    return lab[None] == np.arange(1, lab.max() + 1)[:, None, None]


def test_matches_the_challenge_scripts_on_random_label_images():
    rng = np.random.default_rng(7)
    seen = set()
    for _ in range(60):
        pred, true = random_labels(rng), random_labels(rng)
        got = image_scores(masks_of(true), masks_of(pred), rng.random(pred.max()))
        sbd, fbd, dic = scripts_reading(pred, true)
        assert got["sbd"] == pytest.approx(sbd, abs=1e-12) and got["predicted"] - got["true"] == dic
        assert got["fbd"] is None if np.isnan(fbd) else got["fbd"] == pytest.approx(fbd, abs=1e-12)
        seen.add((pred.max() > 0, true.max() > 0, 0 < sbd < 1))
    # empty sides and partial matches were all drawn
    assert {(False, True, False), (True, False, False), (True, True, True)} <= seen


def test_paint_puts_the_most_confident_on_top():
    masks = np.zeros((3, 2, 4), bool)
    masks[0, :, :3] = True  # under the others
    masks[1, :, 1:] = True
    masks[2, :, 2:] = True
    assert paint(masks, np.array([0.2, 0.9, 0.5])).tolist() == [[1, 2, 2, 2]] * 2
    assert paint(masks, np.array([0.5, 0.5, 0.5])).tolist() == [[1, 2, 3, 3]] * 2  # equal scores: the later on top
    assert paint(masks[:0], np.zeros(0)).tolist() == [[0] * 4] * 2


def test_best_dice_is_not_symmetric_and_zero_on_an_empty_side():
    dice = np.array([[1.0, 0.2], [0.0, 0.5], [0.0, 0.5]])  # three objects against two
    assert best_dice(dice) == pytest.approx(2 / 3) and best_dice(dice.T) == pytest.approx(3 / 4)
    assert best_dice(np.zeros((3, 0))) == best_dice(np.zeros((0, 2))) == 0.0


def test_set_figures_do_not_depend_on_the_image_order():
    """Under DDP the ranks' images are merged in another order than one process sees them: the means must not
    change in their last bit (np.mean of these five in the two orders differs)."""
    per_image = [{"sbd": v, "fbd": v, "predicted": 1, "true": 1} for v in (0.1, 0.7, 1 / 3, 0.2, 1e-3)]
    assert np.mean([s["sbd"] for s in per_image]) != np.mean([s["sbd"] for s in per_image[::-1]])
    assert summarize(per_image) == summarize(per_image[::-1])
