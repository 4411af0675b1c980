"""Pseudo-label writing: thresholds (global and per class), masks on disk, quality against ground truth."""

import numpy as np
import pytest
from fixtures_data import write_jpeg, write_lines, write_png

from budgetseg.config import PseudoConfig
from budgetseg.data.readers import open_dataset
from budgetseg.data.sample import encode_label_png, read_label_png
from budgetseg.io import atomic_write
from budgetseg.semantic.pseudo import class_thresholds, finalize


def _write(path, arr):
    atomic_write(path, lambda f: encode_label_png(arr, f))


@pytest.fixture
def pool(tmp_path):
    """Two 4x4 images with known ground truth, and raw predictions + confidences of a fake annotator."""
    root = tmp_path / "voc"
    gt = {"a": np.array([[0, 0, 1, 1]] * 4, np.uint8), "b": np.array([[2, 2, 0, 0]] * 4, np.uint8)}
    for k, v in gt.items():
        write_jpeg(root / "JPEGImages" / f"{k}.jpg", 4, 4)
        write_png(root / "SegmentationClass" / f"{k}.png", v)
    write_lines(root / "ImageSets" / "Segmentation" / "train.txt", list(gt))
    write_lines(root / "classes.txt", ["background", "one", "two"])
    ds = open_dataset("voc", root, "train")
    pdir = tmp_path / "pseudo"
    raw = {"a": np.array([[0, 1, 1, 1]] * 4, np.uint8), "b": np.array([[2, 2, 0, 0]] * 4, np.uint8)}
    conf = {"a": np.array([[250, 60, 200, 240]] * 4, np.uint8), "b": np.array([[100, 120, 255, 255]] * 4, np.uint8)}
    for k in raw:
        _write(pdir / "raw" / f"{k}.png", raw[k])
        _write(pdir / "conf" / f"{k}.png", conf[k])
    return ds, pdir


def test_no_threshold_keeps_everything_and_measures_quality(pool):
    ds, pdir = pool
    s = finalize(pdir, ds, ["a", "b"], ds.class_names, PseudoConfig(), progress=False)
    assert s["kept_fraction"] == 1.0
    assert np.array_equal(read_label_png(pdir / "labels" / "a.png"), read_label_png(pdir / "raw" / "a.png"))
    # confusion: bg tp 12 fn 4; one tp 8 fp 4; two tp 8 -> IoU 12/16, 8/12, 1
    assert s["miou"] == pytest.approx((12 / 16 + 8 / 12 + 1.0) / 3)
    # the raw labels' confusion, rows ground truth: a's column 1 is background labelled one
    assert s["confusion"] == [[12, 4, 0], [0, 8, 0], [0, 0, 8]]
    assert s["images"] == 2
    assert (pdir / "confidence.csv").read_text().splitlines()[0] == "id,mean_confidence,kept_fraction"


def test_global_threshold_sets_low_confidence_pixels_to_ignore(pool):
    ds, pdir = pool
    s = finalize(pdir, ds, ["a", "b"], ds.class_names, PseudoConfig(threshold=0.5), progress=False)
    a = read_label_png(pdir / "labels" / "a.png")
    assert (a[:, 1] == 255).all() and (a[:, [0, 2, 3]] != 255).all()  # 60/255 < 0.5
    b = read_label_png(pdir / "labels" / "b.png")
    assert (b[:, :2] == 255).all() and (b[:, 2:] == 0).all()  # 100 and 120 < 127.5
    assert s["kept_fraction"] == pytest.approx(5 / 8)
    assert s["kept_pixel_accuracy"] == pytest.approx(1.0)  # only the wrong / unsure pixels were dropped


def test_class_quantile_thresholds_each_class_separately(pool):
    ds, pdir = pool
    thr = class_thresholds(pdir, ["a", "b"], 3, PseudoConfig(class_quantile=0.5))
    # class 1 confidences: 60, 200, 240 (x4 rows) -> median 200; class 2: 100, 120 -> 100
    assert thr[1] == pytest.approx(200 / 255) and thr[2] == pytest.approx(100 / 255)
    finalize(pdir, ds, ["a", "b"], ds.class_names, PseudoConfig(class_quantile=0.5), progress=False)
    b = read_label_png(pdir / "labels" / "b.png")
    assert (b[:, :2] == 2).all()  # a global 0.5 would have wiped class 2 out of this image
