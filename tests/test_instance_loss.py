"""Instance targets, soft IoU, Hungarian matching, the RSIS loss and post-processing on hand-made arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from budgetseg.instance.decode import select_instances, step_outputs
from budgetseg.instance.matching import (
    _assign,
    balanced_bce,
    curriculum_steps,
    emission_order,
    instance_target,
    instances_from_target,
    match,
    rsis_loss,
    soft_iou,
    steps_for,
)
from budgetseg.instance.task import InstanceTask

BIG = 30.0  # logit magnitude of a "certain" prediction


def _box(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def _scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three disjoint boxes on 16 x 16 (classes 2, 1, 2; areas 16, 9, 36) and an ignored strip."""
    masks = np.stack([_box(16, 16, 0, 4, 0, 4), _box(16, 16, 10, 13, 0, 3), _box(16, 16, 8, 14, 8, 14)])
    ignore = _box(16, 16, 15, 16, 0, 16)
    return masks, np.array([2, 1, 2]), ignore


def _target() -> torch.Tensor:
    masks, classes, ignore = _scene()
    return torch.from_numpy(instance_target(masks, classes, 16, 16, ignore)).long()


def _perfect(target: torch.Tensor, steps: int, num_classes: int = 3, perm=None) -> dict[str, torch.Tensor]:
    """Certain outputs (batch of one) emitting the target's instances in order `perm`, then stopping."""
    gt, classes, _ = instances_from_target(target)
    k = len(gt)
    perm = list(range(k)) if perm is None else perm
    masks = torch.full((steps, *gt.shape[1:]), -BIG)
    masks[:k] = torch.where(gt[perm], BIG, -BIG)
    logits = torch.full((steps, num_classes), -BIG)
    logits[torch.arange(k), classes[perm]] = BIG
    stop = torch.where(torch.arange(steps) < k, BIG, -BIG)
    return {"masks": masks[None], "classes": logits[None], "stop": stop[None]}


# ------------------------------------------------------------------------------------------------ targets


def test_instance_target_round_trip_and_order():
    masks, classes, ignore = _scene()
    target = instance_target(masks, classes, 16, 16, ignore)
    assert target.dtype == np.uint8 and target.shape == (16, 16, 2)
    assert (target[ignore] == 255).all()
    gt, cls, valid = instances_from_target(torch.from_numpy(target).long())
    # order rule: class id ascending, then area descending
    assert cls.tolist() == [1, 2, 2]
    expected = masks[[1, 2, 0]] & ~ignore
    assert torch.equal(gt, torch.from_numpy(expected))
    assert torch.equal(valid, torch.from_numpy(~ignore))


def test_later_masks_paint_over_earlier_and_majority_class():
    a, b = _box(8, 8, 0, 4, 0, 4), _box(8, 8, 2, 6, 2, 6)
    target = instance_target(np.stack([a, b]), np.array([1, 2]), 8, 8)
    assert target[3, 3].tolist() == [2, 2] and target[0, 0].tolist() == [1, 1]
    # instance 1 lies mostly on class 3, partly on class 1: it takes the majority class
    t = torch.from_numpy(target).long()
    t[..., 0][t[..., 1] == 1] = 3
    t[0, 0, 0] = 1
    gt, cls, _ = instances_from_target(t)
    assert sorted(cls.tolist()) == [2, 3]
    empty = torch.zeros(8, 8, 2, dtype=torch.long)
    gt, cls, valid = instances_from_target(empty)
    assert gt.shape == (0, 8, 8) and cls.shape == (0,) and valid.all()


def test_steps_for():
    target = torch.stack([_target(), torch.zeros(16, 16, 2, dtype=torch.long)])
    assert steps_for(target, 10) == 4  # 3 instances + 1 step that must say "stop"
    assert steps_for(target, 2) == 2


# ------------------------------------------------------------------------------------- soft IoU and matching


def test_curriculum_grows_the_step_cap_from_one():
    assert [curriculum_steps(p, 10, 0.5) for p in (0.0, 0.04, 0.05, 0.25, 0.49, 0.5, 0.9)] == [1, 1, 2, 6, 10, 10, 10]
    assert curriculum_steps(0.0, 10, 0.0) == 10  # no curriculum
    assert curriculum_steps(0.0, 1, 0.5) == 1


def test_soft_iou_exact_values_and_ignore():
    p = torch.tensor([[[1.0, 0.5], [0.0, 1.0]]])  # (T=1, 2, 2)
    g = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])  # (K=1, 2, 2)
    all_valid = torch.ones(2, 2, dtype=torch.bool)
    # intersection 1 + 0.5; union 1 + 1 + 0 + 1
    assert soft_iou(p, g, all_valid).item() == pytest.approx(1.5 / 3.0)
    valid = torch.tensor([[True, True], [True, False]])  # the false positive is ignored
    assert soft_iou(p, g, valid).item() == pytest.approx(1.5 / 2.0)
    assert soft_iou(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2), all_valid).item() == 0.0


def test_match_finds_permuted_predictions_among_first_k_steps():
    gt, _, valid = instances_from_target(_target())
    perm = [2, 0, 1]  # step t predicts object perm[t] (blurred so nothing is exact)
    probs = torch.zeros(4, 16, 16)
    probs[:3] = 0.8 * gt[perm].float() + 0.1
    probs[3] = gt[0].float()  # a perfect copy after the first K steps must not be used
    pred_idx, gt_idx = match(probs, gt.float(), valid)
    assert pred_idx.tolist() == [0, 1, 2]
    assert gt_idx.tolist() == perm


def test_match_with_fewer_steps_than_objects():
    gt, _, valid = instances_from_target(_target())
    probs = gt[[2, 1]].float()
    pred_idx, gt_idx = match(probs, gt.float(), valid)
    assert pred_idx.tolist() == [0, 1] and gt_idx.tolist() == [2, 1]


# ------------------------------------------------------------------------------------------------- loss


def test_loss_near_zero_for_perfect_predictions_in_any_order():
    target = _target()
    weight = torch.ones(1)
    assert rsis_loss(_perfect(target, 5), target[None], weight).item() < 1e-4
    assert rsis_loss(_perfect(target, 5, perm=[2, 0, 1]), target[None], weight).item() < 1e-4


def test_loss_grows_for_wrong_predictions():
    target = _target()[None]
    good = _perfect(target[0], 5)
    weight = torch.ones(1)
    wrong_classes = dict(good, classes=good["classes"].roll(1, dims=2))
    wrong_masks = dict(good, masks=good["masks"].roll(5, dims=3))
    early_stop = dict(good, stop=-good["stop"])
    for bad in (wrong_classes, wrong_masks, early_stop):
        assert rsis_loss(bad, target, weight).item() > 0.1


def test_balanced_bce_hand_case():
    logits, target = torch.tensor([0.0, 2.0, 2.0, 2.0]), torch.tensor([1, 0, 0, 0])
    pos, neg = math.log(2.0), F.softplus(torch.tensor(2.0)).item()
    assert balanced_bce(logits, target).item() == pytest.approx(0.5 * (pos + neg), rel=1e-5)
    assert balanced_bce(logits[1:], target[1:]).item() == pytest.approx(neg, rel=1e-5)  # negatives only


def test_loss_terms_weights_and_empty_images():
    target = _target()
    out = _perfect(target, 4)
    out["stop"] = torch.tensor([[BIG, BIG, BIG, 2.0]])  # only the final "stop" step is wrong
    neg = F.softplus(torch.tensor(2.0)).item()
    # one term: the negatives' half of the balanced stop BCE, scaled by stop_w
    assert rsis_loss(out, target[None], torch.ones(1)).item() == pytest.approx(0.5 * 0.5 * neg, rel=1e-4)
    assert rsis_loss(out, target[None], torch.ones(1), stop_w=1.0).item() == pytest.approx(0.5 * neg, rel=1e-4)
    # an image without objects: the stop term only, over all negatives; weights scale images, batch mean
    empty = torch.zeros_like(target)
    out2 = {k: torch.cat([v, v]) for k, v in out.items()}
    loss = rsis_loss(out2, torch.stack([empty, target]), torch.tensor([1.0, 0.0])).item()
    all_neg = F.softplus(torch.tensor([BIG, BIG, BIG, 2.0])).mean().item()
    assert loss == pytest.approx(0.5 * 0.5 * all_neg, rel=1e-4)


def test_loss_gradients_reach_all_outputs():
    target = _target()[None]
    out = {k: torch.zeros_like(v).requires_grad_() for k, v in _perfect(target[0], 4).items()}
    rsis_loss(out, target, torch.ones(1)).backward()
    assert all(v.grad.abs().sum() > 0 for v in out.values())
    assert out["classes"].grad[0, 3].abs().sum() == 0  # the unmatched step has no class loss


# ------------------------------------------------------------------------------------------ post-processing


def _decoded(out: dict) -> list:
    """The instances of the one image of `out` as inference makes them (InstanceTask.decode_batch, then finish)."""
    hw = tuple(out["masks"].shape[-2:])
    task = InstanceTask(["background", "a", "b"], steps=out["stop"].shape[1])
    return task.finish(task.decode_batch(out, [hw], [hw])[0])


def test_decoding_stops_at_first_low_objectness():
    target = _target()
    out = _perfect(target, 5)
    out["stop"] = torch.tensor([[3.0, 2.0, 1.0, -1.0, 5.0]])  # step 3 stops; step 4 is never reached
    out["masks"][0, 1] = -BIG  # an empty mask is dropped but does not stop the sequence
    out["masks"][0, 2] = torch.where(out["masks"][0, 2] > 0, 0.1, -0.1)  # probabilities just above 0.5
    out["classes"][0, 0] = torch.tensor([5.0, 1.0, 4.0])  # background wins, yet a foreground class is chosen
    result = _decoded(out)
    assert len(result) == 2
    gt, classes, _ = instances_from_target(target)
    (m0, c0, s0), (m2, c2, s2) = result
    assert m0.dtype == bool and np.array_equal(m0, gt[0].numpy())
    assert np.array_equal(m2, gt[2].numpy())
    p = torch.tensor([5.0, 1.0, 4.0]).softmax(0)
    assert c0 == 2 and s0 == pytest.approx(p[2].item() * torch.sigmoid(torch.tensor(3.0)).item(), rel=1e-5)
    assert c2 == classes[2].item() and s2 == pytest.approx(torch.sigmoid(torch.tensor(1.0)).item(), rel=1e-5)
    assert select_instances(step_outputs(out, 0), stop_threshold=0.99) == []


# ------------------------------------------------------------------------------- emission order and W-RSIS


def test_emission_order_largest_first_or_by_class_then_largest():
    gt, classes, _ = instances_from_target(_target())  # classes [1, 2, 2], areas [9, 36, 16]
    assert classes.tolist() == [1, 2, 2]
    assert emission_order(gt, classes, by_class=False).tolist() == [2, 0, 1]  # 36, 16, 9
    assert emission_order(gt, classes, by_class=True).tolist() == [0, 1, 2]


def test_near_ties_follow_the_emission_order_and_real_differences_win():
    blob = torch.full((3, 3), 0.3)  # every step predicts the same blob: pure IoU matching is arbitrary
    order = np.array([2, 0, 1])
    pi, gi = _assign(blob, order)
    assert gi[np.argsort(pi)].tolist() == [1, 2, 0]  # step t takes the object due at t
    iou = torch.eye(3) * 0.9  # clear winners: step t covers object t, whatever the order says
    pi, gi = _assign(iou, order)
    assert gi[np.argsort(pi)].tolist() == [0, 1, 2]


def test_given_classes_restrict_the_matching():
    target = _target()
    out = _perfect(target, 4, perm=[0, 2, 1])  # steps cover objects 0, 2, 1 (classes 1, 2, 2)
    # told classes 2, 1, 2: step 0 covers the class-1 object but may only take a class-2 one
    out["given"] = torch.tensor([[2, 1, 2, 0]])
    told_wrong = rsis_loss(out, target[None], torch.ones(1)).item()
    out["given"] = torch.tensor([[1, 2, 2, 0]])
    assert rsis_loss(out, target[None], torch.ones(1)).item() < 1e-4  # same class: any order within it
    assert told_wrong > 0.5


def test_wrsis_decoding_emits_the_given_classes_without_a_stop_test():
    target = _target()
    out = _perfect(target, 4)
    out["stop"] = torch.tensor([[-3.0, 2.0, 1.0, 5.0]])  # a low first objectness does not end the sequence
    out["classes"][0] = out["classes"][0].roll(1, dims=1)  # the class head is ignored: the classes are known
    out["given"] = torch.tensor([[1, 2, 2, 0]])
    result = _decoded(out)
    gt, _, _ = instances_from_target(target)
    assert [c for _, c, _ in result] == [1, 2, 2]
    assert all(np.array_equal(m, g.numpy()) for (m, _, _), g in zip(result, gt, strict=True))
    assert result[0][2] == pytest.approx(torch.sigmoid(torch.tensor(-3.0)).item(), rel=1e-5)


def test_mask_bce_term_on_matched_masks_over_valid_pixels():
    target = _target()
    out = _perfect(target, 4)
    assert rsis_loss(out, target[None], torch.ones(1), bce_w=1.0).item() < 1e-4
    flat = dict(out, masks=torch.zeros_like(out["masks"]))  # p = 0.5 everywhere: BCE = log 2 per pixel
    soft = rsis_loss(flat, target[None], torch.ones(1)).item()
    both = rsis_loss(flat, target[None], torch.ones(1), bce_w=2.0).item()
    assert both - soft == pytest.approx(2.0 * math.log(2.0), rel=1e-5)
