from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fixtures_data import write_coco, write_sbd, write_voc

from budgetseg.data.coco import COCODataset
from budgetseg.data.readers import open_dataset
from budgetseg.data.sample import Sample
from budgetseg.data.sbd import SBDDataset
from budgetseg.data.stats import DatasetStats, components, dataset_stats
from budgetseg.data.voc import VOC_CLASSES, VOCDataset
from budgetseg.errors import BudgetsegError


def zero_counts(names: list[str]) -> dict[str, int]:
    return {n: 0 for n in names[1:]}


def test_voc_stats(tmp_path: Path):
    write_voc(tmp_path)
    stats = dataset_stats(VOCDataset(tmp_path))
    # a: person + dog, 2 persons + 1 dog; b: aeroplane, 1 object (the background-only object is skipped); c: none.
    assert stats.images == 3 and stats.classes == 20
    assert stats.classes_per_image == pytest.approx((2 + 1 + 0) / 3)
    assert stats.objects_per_image == pytest.approx((3 + 1 + 0) / 3)
    assert stats.per_class_images == zero_counts(VOC_CLASSES) | {"person": 1, "dog": 1, "aeroplane": 1}
    assert stats.per_class_instances == zero_counts(VOC_CLASSES) | {"person": 2, "dog": 1, "aeroplane": 1}


def test_semantic_only_estimates_objects_from_connected_components(tmp_path: Path):
    write_voc(tmp_path, objects=False)
    stats = dataset_stats(VOCDataset(tmp_path))
    # a: the two persons touch, so they count as one component (the estimate errs low), plus the dog;
    # b: the aeroplane stays one component around its ignore pixels; c: nothing
    assert stats.objects_estimated and stats.objects_per_image == pytest.approx(1.0)
    assert stats.per_class_instances == zero_counts(VOC_CLASSES) | {"person": 1, "dog": 1, "aeroplane": 1}
    # two separate blobs of one class are two objects
    sem = np.zeros((6, 8), np.uint8)
    sem[0:2, 0:2] = sem[4:6, 5:8] = 15
    assert components(sem, 21)[15] == 2 and components(sem, 21).sum() == 2


def test_stats_skip_unlabeled_images_and_take_ids(tmp_path: Path):
    write_voc(tmp_path)
    (tmp_path / "SegmentationClass" / "a.png").unlink()  # a partly labelled pool
    ds = VOCDataset(tmp_path)
    assert not ds.has_labels("a") and ds.has_labels("b")
    assert dataset_stats(ds).images == 2
    only_b = dataset_stats(ds, ids=["b"])
    assert only_b.images == 1 and only_b.objects_per_image == 1.0 and not only_b.objects_estimated


def test_coco_stats_and_json(tmp_path: Path):
    write_coco(tmp_path / "ann.json", tmp_path / "images")
    stats = dataset_stats(COCODataset(tmp_path / "ann.json", tmp_path / "images"), progress=True)
    # Image 1: car, train, zebra (the crowd car region is ignore, not a class); image 42: nothing.
    assert stats == DatasetStats(
        images=2,
        classes=3,
        classes_per_image=1.5,
        objects_per_image=1.5,
        per_class_images={"car": 1, "train": 1, "zebra": 1},
        per_class_instances={"car": 1, "train": 1, "zebra": 1},
    )
    d = json.loads(json.dumps(stats.to_dict()))
    assert list(d) == [
        "images",
        "classes",
        "classes_per_image",
        "objects_per_image",
        "per_class_images",
        "per_class_instances",
        "objects_estimated",
        "background",
        "box_objects",
        "box_images",
    ]
    assert d["per_class_images"]["zebra"] == 1


class NoImageDataset:
    """Fails if statistics ever decode an image."""

    class_names = ["background", "x", "y"]
    ids = ["0", "1"]
    has_instances = True
    background = True

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> Sample:
        raise AssertionError("statistics must go through load(..., with_image=False)")

    def has_labels(self, image_id: str) -> bool:  # every reader says (data.sample.SegDataset)
        return True

    def load(self, image_id: str, with_image: bool = True) -> Sample:
        assert not with_image
        sem = np.full((4, 5), 255, np.uint8)
        sem[0, 0] = 2
        masks = np.zeros((3, 4, 5), bool)
        return Sample(image_id, np.zeros((4, 5, 0), np.uint8), sem, masks, np.array([2, 2, 1]))


def test_stats_do_not_decode_images_and_skip_ignore():
    stats = dataset_stats(NoImageDataset())
    assert stats.classes_per_image == 1.0 and stats.objects_per_image == 3.0
    assert stats.per_class_images == {"x": 0, "y": 2}
    assert stats.per_class_instances == {"x": 2, "y": 4}


def test_open_dataset_voc_and_sbd(tmp_path: Path):
    write_voc(tmp_path / "voc")
    write_sbd(tmp_path / "sbd")
    voc = open_dataset("voc", tmp_path / "voc", None)
    assert isinstance(voc, VOCDataset) and voc.ids == ["a", "b", "c"]
    assert open_dataset("voc", str(tmp_path / "voc"), "val").ids == ["c"]
    sbd = open_dataset("sbd", tmp_path / "sbd", "val")
    assert isinstance(sbd, SBDDataset) and sbd.ids == ["e"]


def test_open_dataset_coco_layouts(tmp_path: Path):
    write_coco(tmp_path / "annotations" / "instances_val.json", tmp_path / "val")
    ds = open_dataset("coco", tmp_path, "val")
    assert isinstance(ds, COCODataset) and ds.image_dir == tmp_path / "val"
    assert ds.load("1").image.shape[:2] == (6, 8)
    # The JSON itself: images from ../val/ in the COCO layout ...
    assert open_dataset("coco", tmp_path / "annotations" / "instances_val.json", None).image_dir == tmp_path / "val"
    # ... or next to a JSON elsewhere.
    write_coco(tmp_path / "flat" / "labels.json", tmp_path / "flat")
    assert open_dataset("coco", tmp_path / "flat" / "labels.json", None).image_dir == tmp_path / "flat"
    with pytest.raises(BudgetsegError, match="instances_train.json"):
        open_dataset("coco", tmp_path, None)  # split defaults to train


def test_open_dataset_coco_json_with_voc_style_images(tmp_path: Path):
    write_coco(tmp_path / "annotations" / "instances_train.json", tmp_path / "JPEGImages")
    assert open_dataset("coco", tmp_path, None).image_dir == tmp_path / "JPEGImages"
    assert open_dataset("coco", tmp_path / "annotations" / "instances_train.json", None).ids == ["1", "42"]


def test_open_dataset_unknown_format(tmp_path: Path):
    with pytest.raises(BudgetsegError, match="unknown dataset format 'cityscapes'"):
        open_dataset("cityscapes", tmp_path, None)
