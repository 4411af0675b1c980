import numpy as np
import pytest

from budgetseg.semantic.metrics import ConfusionMatrix, SemanticEvaluator


def test_confusion_matrix_hand_computed():
    target = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 2, 0]])
    ev = SemanticEvaluator(["bg", "a", "b"])
    ev.process(target, pred)
    # class 0: tp 1, fp 0 (the 255 pixel is ignored), fn 1 -> 1/2; class 1: tp 2, fp 1 -> 2/3; class 2: 1
    r = ev.evaluate()
    assert r["per_class_iou"] == pytest.approx({"bg": 0.5, "a": 2 / 3, "b": 1.0})
    assert r["miou"] == pytest.approx((0.5 + 2 / 3 + 1.0) / 3)
    assert r["pixel_accuracy"] == pytest.approx(4 / 5)
    # rows: ground truth, columns: prediction; the ignored pixel is in none of them
    assert r["confusion"] == [[1, 1, 0], [0, 2, 0], [0, 0, 1]]


def test_absent_classes_do_not_count_and_batches_accumulate():
    ev = SemanticEvaluator(["bg", "a", "b", "never"])
    ev.process(np.zeros((2, 2), int), np.zeros((2, 2), int))
    ev.process(np.array([[1, 1]]), np.array([[2, 1]]))
    r = ev.evaluate()
    assert r["per_class_iou"]["never"] is None
    # bg 1.0, a 1/2, b 0/1 = 0 -> mean over the three classes that occur
    assert r["miou"] == pytest.approx(0.5)
    ev.reset()
    assert ConfusionMatrix(3).mat.sum() == 0 and ev.cm.mat.sum() == 0


def test_perfect_prediction_scores_one():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 5, (3, 16, 16))
    ev = SemanticEvaluator([str(i) for i in range(5)])
    ev.process(t, t)
    assert ev.evaluate()["miou"] == pytest.approx(1.0)
