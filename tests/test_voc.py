from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fixtures_data import H, Labels, W, write_jpeg, write_lines, write_png, write_voc
from PIL import Image

from budgetseg.data.voc import VOC_CLASSES, VOCDataset
from budgetseg.errors import BudgetsegError


def assert_labels(sample, lab: Labels) -> None:
    np.testing.assert_array_equal(sample.semantic, lab.semantic)
    assert sample.semantic.dtype == np.uint8
    np.testing.assert_array_equal(sample.instance_masks, lab.masks.reshape(-1, *lab.semantic.shape))
    assert sample.instance_masks.dtype == bool
    np.testing.assert_array_equal(sample.instance_classes, lab.classes)
    assert sample.instance_classes.dtype == np.int64


def test_voc_classes():
    assert len(VOC_CLASSES) == 21
    assert VOC_CLASSES[0] == "background" and VOC_CLASSES[15] == "person" and VOC_CLASSES[20] == "tvmonitor"


def test_round_trip(tmp_path: Path):
    expected = write_voc(tmp_path)
    ds = VOCDataset(tmp_path)
    assert ds.ids == ["a", "b", "c"] and len(ds) == 3
    assert ds.class_names == VOC_CLASSES
    for i, image_id in enumerate(ds.ids):
        sample = ds[i]
        assert sample.id == image_id
        assert sample.image.shape == (H, W, 3) and sample.image.dtype == np.uint8
        # JPEG of a flat colour decodes to (nearly) that colour.
        assert np.abs(sample.image.astype(int) - [200, 40, 90]).max() <= 4
        assert_labels(sample, expected[image_id])


def test_val_split_and_negative_index(tmp_path: Path):
    write_voc(tmp_path)
    ds = VOCDataset(tmp_path, "val")
    assert ds.ids == ["c"]
    assert ds[-1].id == "c"


def test_without_image_keeps_labels(tmp_path: Path):
    expected = write_voc(tmp_path)
    sample = VOCDataset(tmp_path).load("a", with_image=False)
    assert sample.image.shape == (H, W, 0) and sample.image.dtype == np.uint8
    assert sample.size == (H, W)
    assert_labels(sample, expected["a"])


def test_semantic_only_dataset_has_no_instances(tmp_path: Path):
    expected = write_voc(tmp_path, objects=False)
    sample = VOCDataset(tmp_path).load("a")
    np.testing.assert_array_equal(sample.semantic, expected["a"].semantic)
    assert sample.instance_masks.shape == (0, H, W) and sample.instance_classes.shape == (0,)


def test_instance_takes_majority_class(tmp_path: Path):
    sem = np.zeros((H, W), np.uint8)
    obj = np.zeros((H, W), np.uint8)
    obj[0:2, 0:4] = 4
    sem[0:2, 0:3] = 9  # 6 chair pixels
    sem[0:2, 3] = 11  # 2 dining-table pixels under the same object
    write_voc(tmp_path, {"train": ["x"]}, labels={"x": (Labels(sem, obj[None] == 4, np.array([9])), obj)})
    sample = VOCDataset(tmp_path).load("x")
    np.testing.assert_array_equal(sample.instance_classes, [9])
    np.testing.assert_array_equal(sample.instance_masks[0], obj == 4)


def test_class_names_from_file_and_argument(tmp_path: Path):
    sem = np.zeros((H, W), np.uint8)
    sem[0, 0] = 2
    write_voc(tmp_path, {"train": ["x"]}, objects=False, labels={"x": (Labels(sem, None, None), None)})
    write_lines(tmp_path / "classes.txt", ["bg", "cat", "dog", ""])
    assert VOCDataset(tmp_path).class_names == ["bg", "cat", "dog"]
    assert VOCDataset(tmp_path, class_names=["x", "y", "z", "w"]).class_names == ["x", "y", "z", "w"]
    assert VOCDataset(tmp_path).load("x").semantic[0, 0] == 2


def corrupt(path: Path) -> None:
    path.write_bytes(b"this is not an image" * 4)


def resize_png(path: Path) -> None:
    write_png(path, np.zeros((H + 1, W), np.uint8))


def put_label(path: Path, value: int) -> None:
    arr = np.asarray(Image.open(path)).copy()
    arr[1, 1] = value
    write_png(path, arr)


# (name, mutation of a fresh fixture, split to open, file the error must name)
BAD_INPUTS = [
    ("missing split", lambda r: None, "nosuch", "ImageSets/Segmentation/nosuch.txt"),
    (
        "empty split",
        lambda r: write_lines(r / "ImageSets/Segmentation/train.txt", ["", " "]),
        "train",
        "ImageSets/Segmentation/train.txt",
    ),
    (
        "duplicate id",
        lambda r: write_lines(r / "ImageSets/Segmentation/train.txt", ["a", "b", "a"]),
        "train",
        "ImageSets/Segmentation/train.txt",
    ),
    ("missing image", lambda r: (r / "JPEGImages/a.jpg").unlink(), "train", "JPEGImages/a.jpg"),
    ("unreadable image", lambda r: corrupt(r / "JPEGImages/a.jpg"), "train", "JPEGImages/a.jpg"),
    (
        "missing class png",
        lambda r: (r / "SegmentationClass/a.png").unlink(),
        "train",
        "SegmentationClass/a.png",
    ),
    (
        "corrupt class png",
        lambda r: corrupt(r / "SegmentationClass/a.png"),
        "train",
        "SegmentationClass/a.png",
    ),
    (
        "rgb class png",
        lambda r: Image.new("RGB", (W, H)).save(r / "SegmentationClass/a.png"),
        "train",
        "SegmentationClass/a.png",
    ),
    (
        "class png size",
        lambda r: resize_png(r / "SegmentationClass/a.png"),
        "train",
        "SegmentationClass/a.png",
    ),
    (
        "image size",
        lambda r: write_jpeg(r / "JPEGImages/a.jpg", H, W + 2),
        "train",
        "SegmentationClass/a.png",
    ),
    (
        "class id 21",
        lambda r: put_label(r / "SegmentationClass/a.png", 21),
        "train",
        "SegmentationClass/a.png",
    ),
    (
        "class id 254",
        lambda r: put_label(r / "SegmentationClass/a.png", 254),
        "train",
        "SegmentationClass/a.png",
    ),
    (
        "class id beyond classes.txt",
        lambda r: write_lines(r / "classes.txt", ["background", "aeroplane", "bicycle"]),
        "train",
        "SegmentationClass/a.png",
    ),
    (
        "object png size",
        lambda r: resize_png(r / "SegmentationObject/a.png"),
        "train",
        "SegmentationObject/a.png",
    ),
    (
        "missing object png",
        lambda r: (r / "SegmentationObject/a.png").unlink(),
        "train",
        "SegmentationObject/a.png",
    ),
    (
        "corrupt object png",
        lambda r: corrupt(r / "SegmentationObject/a.png"),
        "train",
        "SegmentationObject/a.png",
    ),
]


@pytest.mark.parametrize("with_image", [True, False])
@pytest.mark.parametrize(("mutate", "split", "culprit"), [b[1:] for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_names_the_file(tmp_path: Path, mutate, split, culprit, with_image):
    write_voc(tmp_path)
    mutate(tmp_path)
    with pytest.raises(BudgetsegError) as info:
        VOCDataset(tmp_path, split).load("a", with_image=with_image)
    message = str(info.value)
    assert str(tmp_path / culprit) in message
    assert "\n" not in message


def test_bad_class_names_file(tmp_path: Path):
    write_voc(tmp_path)
    write_lines(tmp_path / "classes.txt", ["background"])
    with pytest.raises(BudgetsegError, match="classes.txt"):
        VOCDataset(tmp_path)
