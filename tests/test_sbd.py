from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from fixtures_data import H, W, write_jpeg, write_lines, write_mat_struct, write_sbd, write_voc

from budgetseg.data.sbd import SBDDataset, voc_train_aug
from budgetseg.data.voc import VOC_CLASSES
from budgetseg.errors import BudgetsegError


def assert_same(sample, lab) -> None:
    np.testing.assert_array_equal(sample.semantic, lab.semantic)
    assert sample.semantic.dtype == np.uint8
    np.testing.assert_array_equal(sample.instance_masks, lab.masks)
    assert sample.instance_masks.dtype == bool
    np.testing.assert_array_equal(sample.instance_classes, lab.classes)
    assert sample.instance_classes.dtype == np.int64


def test_mat_files_look_like_sbd(tmp_path: Path):
    # The fixture's .mat files must read back as MATLAB structs, the way the real SBD files are read.
    write_sbd(tmp_path)
    m = scipy.io.loadmat(tmp_path / "inst" / "d.mat", squeeze_me=True, struct_as_record=False)
    assert m["GTinst"].Segmentation.shape == (H, W)
    np.testing.assert_array_equal(m["GTinst"].Categories, [8, 7])


def test_round_trip(tmp_path: Path):
    expected = write_sbd(tmp_path)
    ds = SBDDataset(tmp_path, "train")
    assert ds.ids == ["b", "d"] and len(ds) == 2
    assert ds.class_names == VOC_CLASSES
    for i, image_id in enumerate(ds.ids):
        sample = ds[i]
        assert sample.id == image_id and sample.image.shape == (H, W, 3)
        assert_same(sample, expected[image_id])
    val = SBDDataset(tmp_path, "val")
    assert val.ids == ["e"]
    sample = val.load("e", with_image=False)
    assert sample.image.shape == (H, W, 0)
    assert_same(sample, expected["e"])  # one instance: Categories is a 1x1 matrix


def test_without_inst_folder_is_semantic_only(tmp_path: Path):
    expected = write_sbd(tmp_path)
    shutil.rmtree(tmp_path / "inst")
    sample = SBDDataset(tmp_path).load("d")
    np.testing.assert_array_equal(sample.semantic, expected["d"].semantic)
    assert sample.instance_masks.shape == (0, H, W)


def test_index_missing_from_map_is_dropped(tmp_path: Path):
    write_sbd(tmp_path)
    seg = np.zeros((H, W), np.uint8)
    seg[0, 0] = 2
    write_mat_struct(tmp_path / "inst/d.mat", "GTinst", {"Segmentation": seg, "Categories": [[8], [7]]})
    sample = SBDDataset(tmp_path).load("d")
    np.testing.assert_array_equal(sample.instance_classes, [7])
    np.testing.assert_array_equal(sample.instance_masks[0], seg == 2)


def test_train_aug_pool(tmp_path: Path):
    voc_expected = write_voc(tmp_path / "voc", {"train": ["a", "b"], "val": ["c"]})
    sbd_expected = write_sbd(tmp_path / "sbd", {"train": ["b", "d", "c"], "val": ["e"]})
    ds = voc_train_aug(tmp_path / "voc", tmp_path / "sbd")
    # (SBD train | SBD val | VOC train) - VOC val, sorted; c is in SBD train but is VOC val.
    assert ds.ids == ["a", "b", "d", "e"] and len(ds) == 4
    assert ds.class_names == VOC_CLASSES
    assert_same(ds[0], voc_expected["a"])
    assert_same(ds.load("b"), voc_expected["b"])  # VOC's own annotation wins over SBD's
    assert_same(ds.load("d"), sbd_expected["d"])
    assert_same(ds.load("e", with_image=False), sbd_expected["e"])
    with pytest.raises(KeyError):
        ds.load("c")


def test_train_aug_needs_voc_classes(tmp_path: Path):
    write_voc(tmp_path / "voc")
    write_lines(tmp_path / "voc" / "classes.txt", ["background", "x"])
    write_sbd(tmp_path / "sbd")
    with pytest.raises(BudgetsegError, match="21 Pascal VOC classes"):
        voc_train_aug(tmp_path / "voc", tmp_path / "sbd")


def corrupt(path: Path) -> None:
    path.write_bytes(b"MATLAB 5.0 MAT-file, but then garbage" * 3)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:200])


def cls_value(path: Path, value: int) -> None:
    seg = np.zeros((H, W), np.uint8)
    seg[2, 2] = value
    write_mat_struct(path, "GTcls", {"Segmentation": seg})


# (name, mutation of a fresh fixture, split to open, file the error must name)
BAD_INPUTS = [
    ("missing split", lambda r: None, "test", "test.txt"),
    ("empty split", lambda r: write_lines(r / "train.txt", []), "train", "train.txt"),
    ("duplicate id", lambda r: write_lines(r / "train.txt", ["d", "d"]), "train", "train.txt"),
    ("missing image", lambda r: (r / "img/d.jpg").unlink(), "train", "img/d.jpg"),
    ("unreadable image", lambda r: (r / "img/d.jpg").write_bytes(b"no"), "train", "img/d.jpg"),
    ("image size", lambda r: write_jpeg(r / "img/d.jpg", H + 1, W), "train", "cls/d.mat"),
    ("missing cls", lambda r: (r / "cls/d.mat").unlink(), "train", "cls/d.mat"),
    ("corrupt cls", lambda r: corrupt(r / "cls/d.mat"), "train", "cls/d.mat"),
    ("truncated cls", lambda r: truncate(r / "cls/d.mat"), "train", "cls/d.mat"),
    ("no GTcls", lambda r: scipy.io.savemat(r / "cls/d.mat", {"other": 1}), "train", "cls/d.mat"),
    (
        "no Segmentation field",
        lambda r: write_mat_struct(r / "cls/d.mat", "GTcls", {"Boundaries": 1}),
        "train",
        "cls/d.mat",
    ),
    ("class id 21", lambda r: cls_value(r / "cls/d.mat", 21), "train", "cls/d.mat"),
    (
        "cls size",
        lambda r: write_mat_struct(r / "cls/d.mat", "GTcls", {"Segmentation": np.zeros((H, W + 1), np.uint8)}),
        "train",
        "cls/d.mat",
    ),
    ("missing inst", lambda r: (r / "inst/d.mat").unlink(), "train", "inst/d.mat"),
    ("corrupt inst", lambda r: corrupt(r / "inst/d.mat"), "train", "inst/d.mat"),
    (
        "inst size",
        lambda r: write_mat_struct(
            r / "inst/d.mat", "GTinst", {"Segmentation": np.zeros((H - 1, W), np.uint8), "Categories": [[8]]}
        ),
        "train",
        "inst/d.mat",
    ),
    (
        "category 0",
        lambda r: write_mat_struct(
            r / "inst/d.mat", "GTinst", {"Segmentation": np.ones((H, W), np.uint8), "Categories": [[0]]}
        ),
        "train",
        "inst/d.mat",
    ),
    (
        "index beyond categories",
        lambda r: write_mat_struct(
            r / "inst/d.mat", "GTinst", {"Segmentation": np.full((H, W), 3, np.uint8), "Categories": [[8]]}
        ),
        "train",
        "inst/d.mat",
    ),
]


@pytest.mark.parametrize("with_image", [True, False])
@pytest.mark.parametrize(("mutate", "split", "culprit"), [b[1:] for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_names_the_file(tmp_path: Path, mutate, split, culprit, with_image):
    write_sbd(tmp_path)
    mutate(tmp_path)
    with pytest.raises(BudgetsegError) as info:
        SBDDataset(tmp_path, split).load("d", with_image=with_image)
    message = str(info.value)
    assert str(tmp_path / culprit) in message
    assert "\n" not in message
