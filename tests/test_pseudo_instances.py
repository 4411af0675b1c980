"""Instance pseudo-labels: per-image files, the streamed COCO JSON, score threshold, quality against truth."""

import numpy as np
import pytest
from fixtures_data import write_jpeg, write_lines, write_png
from pycocotools.coco import COCO

from budgetseg.config import PseudoConfig
from budgetseg.data.readers import open_dataset
from budgetseg.instance.matching import instance_target
from budgetseg.instance.pseudo import finalize_instances, load_pseudo_labels, paint_order, write_instances
from budgetseg.instance.task import InstanceTask


def _square(r, c, n=3, h=8, w=8):
    m = np.zeros((h, w), bool)
    m[r : r + n, c : c + n] = True
    return m


@pytest.fixture
def pool(tmp_path):
    """Two 8x8 images with two objects each (classes 1 and 2), as a VOC layout with instance masks."""
    root = tmp_path / "voc"
    truth = {"a": [(_square(0, 0), 1), (_square(4, 4), 2)], "b": [(_square(1, 4), 2), (_square(5, 0), 2)]}
    for k, objs in truth.items():
        sem, obj = np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8)
        for n, (m, c) in enumerate(objs):
            sem[m], obj[m] = c, n + 1
        write_jpeg(root / "JPEGImages" / f"{k}.jpg", 8, 8)
        write_png(root / "SegmentationClass" / f"{k}.png", sem)
        write_png(root / "SegmentationObject" / f"{k}.png", obj)
    write_lines(root / "ImageSets" / "Segmentation" / "train.txt", list(truth))
    write_lines(root / "classes.txt", ["background", "one", "two"])
    return open_dataset("voc", root, "train"), truth


def test_perfect_pseudo_labels_score_one_and_load_as_coco(pool, tmp_path):
    ds, truth = pool
    out = tmp_path / "pseudo"
    for k, objs in truth.items():
        write_instances(out, k, (8, 8), [(m, c, 0.9) for m, c in objs])
    s = finalize_instances(out, ds, ["a", "b"], PseudoConfig(), progress=False)
    assert s["ap50"] == pytest.approx(1.0) and s["ap"] == pytest.approx(1.0)
    assert (s["instances"], s["kept_instances"]) == (4, 4)
    coco = COCO(str(out / "pseudo_labels.json"))  # valid COCO, readable by pycocotools
    assert sorted(c["name"] for c in coco.loadCats(coco.getCatIds())) == ["one", "two"]
    assert len(coco.getAnnIds()) == 4
    a = coco.getImgIds()[0]
    masks = [coco.annToMask(x).astype(bool) for x in coco.loadAnns(coco.getAnnIds(imgIds=a))]
    assert any(np.array_equal(m, truth["a"][0][0]) for m in masks)


def test_score_threshold_turns_instances_into_ignored_crowd_regions(pool, tmp_path):
    ds, truth = pool
    out = tmp_path / "pseudo"
    write_instances(out, "a", (8, 8), [(truth["a"][0][0], 1, 0.9), (truth["a"][1][0], 2, 0.3)])
    write_instances(out, "b", (8, 8), [])
    s = finalize_instances(out, ds, ["a", "b"], PseudoConfig(threshold=0.5), progress=False)
    assert (s["instances"], s["kept_instances"], s["kept_fraction"]) == (2, 1, 0.5)
    labels = load_pseudo_labels(out / "pseudo_labels.json")
    assert [(c, crowd, sc) for _, c, crowd, sc in labels["a"]] == [(1, False, 0.9), (2, True, 0.3)]
    assert labels["b"] == []
    target = InstanceTask(ds.class_names).pseudo_labels(out).target("a", (8, 8))
    assert target.shape == (8, 8, 2)
    assert (target[..., 0][truth["a"][0][0]] == 1).all() and (target[..., 1][truth["a"][0][0]] == 1).all()
    assert (target[truth["a"][1][0]] == 255).all()  # the unsure instance is ignored, neither object nor background
    assert (target[~(truth["a"][0][0] | truth["a"][1][0])] == 0).all()
    # quality is measured on everything f_theta predicted, before the threshold
    assert s["ap50"] < 1.0


def test_paint_order_puts_the_confident_on_top_and_ignores_unsure_pixels_only_outside_kept_ones():
    big, equal_a, equal_b = _square(0, 0, n=6), _square(4, 4, n=3), _square(5, 5, n=3)
    unsure = _square(0, 5, n=3)  # overlaps the big one at column 5 only
    # load_pseudo_labels' order: descending score
    decoded = [(equal_a, 1, False, 0.9), (equal_b, 2, False, 0.8), (unsure, 1, True, 0.3), (big, 2, False, 0.7)]
    kept, masks, ignore = paint_order(decoded, 8, 8)
    assert [(c, s) for _, c, s in kept] == [(2, 0.7), (2, 0.8), (1, 0.9)] and masks.shape == (3, 8, 8)
    target = instance_target(masks, np.array([c for _, c, _ in kept]), 8, 8, ignore)
    assert target[5, 5, 1] == 3 and target[5, 5, 0] == 1  # equal areas: the 0.9 one over the 0.8 one
    assert target[2, 2, 1] == 1  # the large one, painted first, keeps the rest of its pixels
    assert target[7, 7, 1] == 2  # the 0.8 one where nothing covers it
    assert (target[0:3, 6:8] == 255).all() and target[0, 5, 1] == 1  # unsure: ignored only outside kept masks
