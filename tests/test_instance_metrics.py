import contextlib
import io
import json

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from budgetseg.instance.metrics import InstanceEvaluator, merge_records, voc_ap

NAMES = ["background", "a", "b"]
H = W = 16


def square(y: int, x: int, size: int = 6, h: int = H, w: int = W) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[y : y + size, x : x + size] = True
    return m


def stack(*masks: np.ndarray) -> np.ndarray:
    return np.stack(masks) if masks else np.zeros((0, H, W), dtype=bool)


def box(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """bool (H, W), True on rows r0..r1-1 and columns c0..c1-1."""
    m = np.zeros((H, W), dtype=bool)
    m[r0:r1, c0:c1] = True
    return m


def add(ev, image_id, gt, gt_cls, pred, pred_cls, scores, ignore=None, crowd=()):
    ev.process(
        image_id, stack(*gt), np.array(gt_cls), stack(*pred), np.array(pred_cls), np.array(scores), ignore, crowd
    )


def scene():
    """3 images, 1-3 squares each, classes a (1) and b (2)."""
    return [
        ("0", [square(1, 1)], [1]),
        ("1", [square(1, 1), square(9, 9)], [1, 2]),
        ("2", [square(0, 0), square(0, 9), square(9, 4)], [2, 1, 2]),
    ]


def test_perfect_predictions_score_one():
    ev = InstanceEvaluator(NAMES)
    for image_id, masks, classes in scene():
        add(ev, image_id, masks, classes, masks, classes, np.linspace(0.9, 0.5, len(masks)))
    r = ev.evaluate()
    assert r["ap"] == pytest.approx(1.0) and r["ap50"] == pytest.approx(1.0) and r["ap75"] == pytest.approx(1.0)
    assert r["ap_r"] == {"0.5": 1.0, "0.6": 1.0, "0.7": 1.0, "0.8": 1.0} and r["ap_r_mean"] == 1.0
    assert (r["images"], r["gt_instances"], r["predictions"]) == (3, 6, 6)


def test_iou_two_thirds_counts_at_half_and_point_six_only():
    ev = InstanceEvaluator(NAMES)
    gt_a, gt_b = square(2, 2, 10), square(12, 0, 4)
    shifted = square(2, 4, 10)  # two columns off: IoU = 80 / 120 = 0.667
    add(ev, "0", [gt_a, gt_b], [1, 2], [shifted, gt_b], [1, 2], [0.9, 0.8])
    r = ev.evaluate()
    # class a: 1, 1, 0, 0; class b: 1 everywhere -> means 1, 1, 0.5, 0.5
    assert r["ap_r"] == {"0.5": 1.0, "0.6": 1.0, "0.7": 0.5, "0.8": 0.5}
    assert r["ap_r_mean"] == pytest.approx(0.75)
    # COCO: class a hits at .50 .55 .60 .65 of the ten thresholds -> 0.4; class b 1.0
    assert r["ap50"] == pytest.approx(1.0) and r["ap75"] == pytest.approx(0.5) and r["ap"] == pytest.approx(0.7)


def test_higher_scored_false_positive_lowers_ap_by_hand_computed_amount():
    ev = InstanceEvaluator(NAMES)
    add(ev, "0", [square(1, 1)], [1], [square(1, 1)], [1], [0.95])
    add(ev, "1", [square(1, 1)], [1], [square(1, 1), square(9, 9)], [1, 1], [0.8, 0.9])  # (9, 9) is background
    add(ev, "2", [square(1, 1)], [1], [square(1, 1)], [1], [0.7])
    r = ev.evaluate()
    # ranked TP FP TP TP: precision 1, 1/2, 2/3, 3/4 at recall 1/3, 1/3, 2/3, 1; envelope 1, 3/4, 3/4
    # -> AP = 1/3 * 1 + 1/3 * 3/4 + 1/3 * 3/4 = 5/6 at every threshold
    assert r["ap_r"]["0.5"] == pytest.approx(5 / 6, abs=1e-12)
    assert r["ap_r_mean"] == pytest.approx(5 / 6, abs=1e-12)


def test_wrong_class_is_false_positive_and_false_negative():
    ev = InstanceEvaluator(NAMES)
    a, b = square(1, 1), square(9, 9)
    add(ev, "0", [a, b], [1, 2], [a, b], [2, 2], [0.9, 0.8])
    r = ev.evaluate()
    # class a: never detected -> 0; class b: FP (a labelled b) then TP -> precision 0, 1/2 at recall 0, 1 -> 1/2
    assert r["ap_r"] == {t: 0.25 for t in ("0.5", "0.6", "0.7", "0.8")}
    assert r["ap50"] == pytest.approx(0.25) and r["ap"] == pytest.approx(0.25)


def test_matches_direct_cocoeval_run():
    rng = np.random.default_rng(3)
    size = 24
    crowd_rng = np.random.default_rng(4)  # a stream of its own, so the objects are those drawn before crowd existed
    images, gt_anns, dt_anns = [], [], []
    ev = InstanceEvaluator(NAMES)
    for i in range(5):
        gts, gt_cls, preds, pred_cls, scores = [], [], [], [], []
        for _ in range(rng.integers(1, 4)):
            y, x, s = rng.integers(0, 14), rng.integers(0, 14), rng.integers(4, 10)
            gts.append(square(y, x, s, size, size))
            gt_cls.append(int(rng.integers(1, 3)))
            dy, dx = rng.integers(-2, 3, 2)
            preds.append(square(max(y + dy, 0), max(x + dx, 0), s, size, size))
            pred_cls.append(gt_cls[-1] if rng.random() < 0.8 else 3 - gt_cls[-1])
            scores.append(float(rng.random()))
        for _ in range(rng.integers(0, 3)):  # extra detections anywhere
            preds.append(square(*rng.integers(0, 18, 2), int(rng.integers(3, 7)), size, size))
            pred_cls.append(int(rng.integers(1, 3)))
            scores.append(float(rng.random()))
        crowd = []
        if crowd_rng.random() < 0.6:  # a crowd region, which may overlap objects and detections
            y, x = crowd_rng.integers(0, 16, 2)
            crowd.append((int(crowd_rng.integers(1, 3)), square(y, x, 8, size, size)))
        ev.process(
            str(i), np.stack(gts), np.array(gt_cls), np.stack(preds), np.array(pred_cls), np.array(scores), crowd=crowd
        )
        images.append({"id": i + 1, "height": size, "width": size})
        objects = [(m, c, 0) for m, c in zip(gts, gt_cls, strict=True)] + [(m, c, 1) for c, m in crowd]
        for m, c, iscrowd in objects:
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            area, bbox = float(mask_utils.area(rle)), mask_utils.toBbox(rle).tolist()
            gt_anns.append(
                {"id": len(gt_anns) + 1, "image_id": i + 1, "category_id": c, "segmentation": rle, "area": area}
                | {"bbox": bbox, "iscrowd": iscrowd}
            )
        for m, c, s in zip(preds, pred_cls, scores, strict=True):
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            dt_anns.append({"image_id": i + 1, "category_id": c, "segmentation": rle, "score": s})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": gt_anns, "categories": [{"id": 1}, {"id": 2}]}
        gt.createIndex()
        coco_eval = COCOeval(gt, gt.loadRes(dt_anns), iouType="segm")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    r = ev.evaluate()
    assert 0 < r["ap50"] < 1
    assert r["ap"] == pytest.approx(coco_eval.stats[0], abs=1e-9)
    assert r["ap50"] == pytest.approx(coco_eval.stats[1], abs=1e-9)
    assert r["ap75"] == pytest.approx(coco_eval.stats[2], abs=1e-9)


def test_no_predictions_score_zero_and_no_ground_truth_is_null_with_a_note():
    ev = InstanceEvaluator(NAMES)
    add(ev, "0", [square(1, 1)], [1], [], [], [])
    r = ev.evaluate()
    assert r["ap"] == r["ap50"] == r["ap75"] == r["ap_r_mean"] == 0.0 and r["predictions"] == 0
    ev.reset()
    add(ev, "0", [], [], [square(1, 1)], [1], [0.5])
    r = ev.evaluate()
    assert r["gt_instances"] == 0 and r["ap"] is None and r["ap_r"]["0.5"] is None and "undefined" in r["note"]
    ev.reset()
    assert ev.evaluate()["ap"] is None


def test_void_pixels_count_for_nothing():
    ev = InstanceEvaluator(NAMES)
    gt = square(4, 4, 6)
    ignore = square(3, 3, 8) & ~gt  # a one-pixel border band, as VOC draws
    void_only = square(12, 12, 3)  # e.g. a region of a category named `ignore`
    ignore |= void_only
    # The prediction spills over the band (IoU 36/64 without ignore); one more lies wholly in void: dropped.
    add(ev, "0", [gt], [1], [square(3, 3, 8), void_only], [1, 1], [0.9, 0.95], torch.from_numpy(ignore))
    r = ev.evaluate()
    assert r["predictions"] == 1 and r["ap_r"]["0.8"] == 1.0 and r["ap75"] == pytest.approx(1.0)


def test_torch_inputs_duplicates_and_rank_merge():
    one, two = InstanceEvaluator(NAMES), InstanceEvaluator(NAMES)
    parts = scene()
    # Rank two also sees image "0" again, as DistributedSampler pads its last batch.
    for ev, (image_id, masks, classes) in zip([one, two, two, two], [*parts, parts[0]], strict=True):
        m = torch.from_numpy(np.stack(masks))
        ev.process(image_id, m, torch.tensor(classes), m, torch.tensor(classes), torch.ones(len(classes)))
    empty = np.zeros((0, H, W), bool)
    one.process("0", empty, np.zeros(0), empty, np.zeros(0), np.zeros(0))  # seen before on this rank: skipped
    assert len(one.records["0"]["gt"]) == 1
    merged = merge_records([one.records, two.records])
    assert list(merged) == ["0", "1", "2"] and merged["0"] is one.records["0"]
    assert sum(len(r["gt"]) for r in merged.values()) == 6
    with pytest.raises(ValueError, match="class ids"):
        one.process("9", stack(square(0, 0)), np.array([3]), empty, np.zeros(0), np.zeros(0))


def test_distributed_gather_on_one_rank(tmp_path):
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        ev = InstanceEvaluator(NAMES)
        for image_id, masks, classes in scene():
            add(ev, image_id, masks, classes, masks, classes, np.ones(len(masks)))
        add(ev, "3", [square(1, 1)], [1], [], [], [])  # a missed leaf: SBD and FBD 0, DiC -1
        r = ev.evaluate()
        assert r["images"] == 4 and r["ap_r_mean"] == pytest.approx((3 / 4 + 1) / 2)  # class a found 3 of 4
        assert cvppp(r) == pytest.approx((3 / 4, 3 / 4, -1 / 4, 1 / 4))
    finally:
        torch.distributed.destroy_process_group()


def test_voc_ap_envelope():
    assert voc_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert voc_ap(np.zeros(0), np.zeros(0)) == 0.0


def test_ap_r_takes_the_best_ground_truth_overall_and_a_duplicate_is_a_false_positive():
    """SDS / VOC rule, by hand. Two overlapping objects of class a, rows 0-3: A columns 0-7, B columns 2-9.
    Detections: d1 = A (0.9); d2 columns 1-7 (0.8): IoU 7/8 with A, 6/9 with B; d3 = B (0.7): IoU 1 with B.
    d1 hits A. d2's best ground truth is A, already matched: a duplicate, FP at every threshold. d3 hits B.
    TP FP TP: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 -> AP^r = 1/2 * 1 + 1/2 * 2/3 = 5/6 at every threshold.
    The old rule (best *unmatched* ground truth) gave d2 to B where 6/9 reaches the threshold, so at 0.5 and 0.6
    it scored TP TP FP -> 1; that was not the SDS rule."""
    ev = InstanceEvaluator(NAMES)
    a, b = box(0, 4, 0, 8), box(0, 4, 2, 10)
    add(ev, "0", [a, b], [1, 1], [a, box(0, 4, 1, 8), b], [1, 1, 1], [0.9, 0.8, 0.7])
    r = ev.evaluate()
    assert r["ap_r"] == pytest.approx({t: 5 / 6 for t in ("0.5", "0.6", "0.7", "0.8")}, abs=1e-12)
    # COCOeval keeps its own rule (best unmatched, 101 recall points). At .50-.65 d2 takes B: TP TP FP -> 1. At
    # .70-.95 TP FP TP: interpolated precision 1 at recall 0..0.50 (51 points), 2/3 at 0.51..1 (50 points)
    # -> (51 + 50 * 2/3) / 101 = 253/303.
    assert r["ap50"] == pytest.approx(1.0) and r["ap75"] == pytest.approx(253 / 303)
    assert r["ap"] == pytest.approx((4 + 6 * 253 / 303) / 10)


CROWD = square(9, 9)  # rows / columns 9-14, class a unless said


@pytest.mark.parametrize(
    "d2, d2_class, crowd_class, ap_r, coco",
    [
        # Wholly on the crowd region (intersection / d2 area = 1): ignored, as if absent -> every AP 1.
        (CROWD, 1, 1, (1, 1, 1, 1), (1, 1, 1)),
        # On background (rows 9-14, columns 1-6): FP, TP -> precision 0, 1/2 at recall 0, 1: AP^r 1/2; COCO's
        # interpolated precision (max over recall >= r) is 1/2 at every recall point -> 1/2 at every threshold.
        (square(9, 1), 1, 1, (0.5, 0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        # On a crowd region of another class: no cover for class a -> FP as on background.
        (CROWD, 1, 2, (0.5, 0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        # Rows / columns 8-13: 25 of its 36 pixels in the crowd region: cover 0.69 (plain IoU 25/47 = 0.53).
        # Ignored at thresholds up to 0.65 (AP 1), FP above (AP 1/2): AP^r 1, 1, 1/2, 1/2; COCO AP50 1, AP75 1/2,
        # AP = (4 * 1 + 6 * 1/2) / 10 = 0.7.
        (square(8, 8), 1, 1, (1, 1, 0.5, 0.5), (0.7, 1, 0.5)),
    ],
)
def test_crowd_region_ignores_the_detections_it_covers(d2, d2_class, crowd_class, ap_r, coco):
    """One object of class a (rows / columns 1-6) found by d1 (0.9); a crowd region; d2 (0.95) ranked first.
    The crowd region is also passed in `ignore`, as `semantic == 255` marks it: it must not be cut as void."""
    ev = InstanceEvaluator(NAMES)
    gt = square(1, 1)
    add(ev, "0", [gt], [1], [gt, d2], [1, d2_class], [0.9, 0.95], CROWD, [(crowd_class, CROWD)])
    r = ev.evaluate()
    assert (r["gt_instances"], r["predictions"]) == (1, 2)  # the crowd region is no instance, d2 is not dropped
    assert [r["ap_r"][t] for t in ("0.5", "0.6", "0.7", "0.8")] == pytest.approx(ap_r, abs=1e-12)
    assert (r["ap"], r["ap50"], r["ap75"]) == pytest.approx(coco, abs=1e-12)


def test_crowd_regions_are_checked_like_the_other_masks():
    ev = InstanceEvaluator(NAMES)
    empty = np.zeros((0, H, W), bool)
    with pytest.raises(ValueError, match="class ids"):
        ev.process("0", empty, np.zeros(0), empty, np.zeros(0), np.zeros(0), crowd=[(3, CROWD)])
    with pytest.raises(ValueError, match="sizes differ"):
        ev.process("0", empty, np.zeros(0), empty, np.zeros(0), np.zeros(0), crowd=[(1, CROWD[:8])])
    # Only a crowd region: no instance to find, AP undefined.
    ev.process("0", empty, np.zeros(0), stack(CROWD), np.array([1]), np.array([0.9]), crowd=[(1, CROWD)])
    r = ev.evaluate()
    assert r["gt_instances"] == 0 and r["ap"] is None


def cvppp(r: dict) -> tuple:
    return r["sbd"], r["fbd"], r["dic"], r["abs_dic"]


def test_cvppp_figures_by_hand():
    """Image 0: leaves A (rows / columns 0-3) and B (rows / columns 8-11), 16 px each; predictions A itself and B's
    left and right halves (8 px each; one of the wrong class: the figures pool classes, as CVPPP has one). Dice of
    each half with B: 2 * 8 / (8 + 16) = 2/3, with A 0. BestDice(predicted, true) = (1 + 2/3 + 2/3) / 3 = 7/9 (B is
    the best match of both halves); BestDice(true, predicted) = (1 + 2/3) / 2 = 5/6; SBD = the lower, 7/9. Equal
    foregrounds: FBD 1. DiC = 3 - 2 = +1.
    Image 1: three leaves, one found exactly: BestDice 1 and 1/3, SBD 1/3; FBD 2 * 16 / (16 + 48) = 1/2; DiC -2.
    The set: SBD (7/9 + 1/3) / 2 = 5/9, FBD 3/4, DiC -1/2 and |DiC| 3/2 (the mean of |+1| and |-2|, not |-1/2|)."""
    ev = InstanceEvaluator(NAMES)
    a, b = square(0, 0, 4), square(8, 8, 4)
    add(ev, "0", [a, b], [1, 1], [a, box(8, 12, 8, 10), box(8, 12, 10, 12)], [1, 2, 1], [0.9, 0.8, 0.7])
    add(ev, "1", [a, square(0, 6, 4), square(8, 0, 4)], [1, 1, 2], [a], [1], [0.9])
    assert ev.records["0"]["cvppp"] == {"sbd": pytest.approx(7 / 9), "fbd": 1.0, "predicted": 3, "true": 2}
    assert ev.records["1"]["cvppp"] == {"sbd": pytest.approx(1 / 3), "fbd": 0.5, "predicted": 1, "true": 3}
    r = ev.evaluate()
    assert cvppp(r) == pytest.approx((5 / 9, 3 / 4, -1 / 2, 3 / 2)) and r["fbd_images"] == 2 and "note" not in r


def test_cvppp_empty_sides_follow_the_challenge_scripts():
    """BestScore.m: 0 when either side has no object, both included; FGBGDice.m: 0/0 (no FBD) when neither side has
    any foreground, so that image leaves the FBD mean. A set without true objects has no SBD; JSON stays strict."""
    ev = InstanceEvaluator(NAMES)
    add(ev, "missed", [square(1, 1)], [1], [], [], [])  # SBD 0, FBD 0, DiC -1
    add(ev, "invented", [], [], [square(1, 1)], [1], [0.3])  # SBD 0, FBD 0, DiC +1
    add(ev, "empty", [], [], [], [], [])  # SBD 0, no FBD, DiC 0
    assert ev.records["empty"]["cvppp"] == {"sbd": 0.0, "fbd": None, "predicted": 0, "true": 0}
    r = ev.evaluate()
    assert cvppp(r) == pytest.approx((0, 0, 0, 2 / 3)) and r["fbd_images"] == 2 and "note" not in r
    del ev.records["missed"]  # no true object left: SBD undefined, the rest defined
    r = ev.evaluate()
    assert cvppp(r) == pytest.approx((None, 0, 1 / 2, 1 / 2)) and "SBD undefined" in r["note"]
    assert "AP is undefined" in r["note"] and "FBD" not in r["note"]
    del ev.records["invented"]
    r = ev.evaluate()
    assert cvppp(r) == (None, None, 0.0, 0.0) and "FBD undefined" in r["note"]
    json.dumps(r, allow_nan=False)
    ev.reset()
    r = ev.evaluate()
    assert cvppp(r) == (None, None, None, None) and r["fbd_images"] == 0 and "no image" in r["note"]
    json.dumps(r, allow_nan=False)


@pytest.mark.parametrize(
    "order, scores, sbd, dic",
    [
        ("small last", (0.5, 0.9), 1.0, 0),  # A on top: the large one keeps exactly B
        ("small last", (0.9, 0.5), 2 / 3, -1),  # the large one on top hides A's: one object
        ("small last", (0.7, 0.7), 1.0, 0),  # equal scores: the later is painted last
        ("small first", (0.7, 0.7), 2 / 3, -1),
    ],
)
def test_overlapping_predictions_are_painted_most_confident_on_top(order, scores, sbd, dic):
    """Leaves A (columns 0-3) and B (columns 4-7) on rows 0-3, 16 px each; predictions: one over both (32 px) and
    one equal to A. With A's on top the large one keeps exactly B: SBD 1, DiC 0. With the large one on top, A's is
    hidden, no object: the large one's Dice with each leaf is 2 * 16 / (16 + 32) = 2/3, so SBD 2/3, DiC 1 - 2 = -1.
    Scored as overlapping masks SBD would be (1 + 2/3) / 2 = 5/6 either way. FBD is 1 in every case."""
    a, b, both = box(0, 4, 0, 4), box(0, 4, 4, 8), box(0, 4, 0, 8)
    preds = [both, a] if order == "small last" else [a, both]
    ev = InstanceEvaluator(NAMES)
    add(ev, "0", [a, b], [1, 1], preds, [1, 1], scores if order == "small last" else scores[::-1])
    r = ev.evaluate()
    assert cvppp(r) == pytest.approx((sbd, 1.0, dic, abs(dic))) and r["predictions"] == 2  # AP keeps both


def test_cvppp_void_and_crowd_pixels_count_for_nothing():
    """A leaf (rows / columns 4-9, 36 px) inside a one-pixel void band; the prediction spills over the band (64 px:
    Dice 2 * 36 / (36 + 64) = 0.72 were the band scored), one lies wholly in void and one wholly on a crowd region
    (passed in `ignore` too, as readers paint crowd 255). Void and crowd pixels are cut from every mask: one
    predicted object, equal to the leaf: SBD 1, FBD 1, DiC 0. Scored without them: BestDice(predicted, true) =
    0.72 / 3, BestDice(true, predicted) = 0.72, so SBD 0.24, FBD 2 * 36 / (36 + 64 + 9 + 16) = 0.576, DiC +2."""
    gt, void_only, crowd = square(4, 4, 6), square(12, 12, 3), box(12, 16, 0, 4)
    ignore = (square(3, 3, 8) & ~gt) | void_only | crowd
    preds, scores = [square(3, 3, 8), void_only, crowd], [0.9, 0.95, 0.8]
    ev = InstanceEvaluator(NAMES)
    add(ev, "0", [gt], [1], preds, [1, 1, 1], scores, ignore, [(1, crowd)])
    r = ev.evaluate()
    assert cvppp(r) == pytest.approx((1.0, 1.0, 0.0, 0.0)) and r["predictions"] == 2  # AP keeps the crowd one
    ev.reset()
    add(ev, "0", [gt], [1], preds, [1, 1, 1], scores)
    assert cvppp(ev.evaluate()) == pytest.approx((0.24, 0.576, 2.0, 2.0))
