from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fixtures_data import H, W, box, coco_json, write_coco, write_jpeg
from pycocotools import mask as mask_utils

from budgetseg.data.coco import COCODataset, instance_annotation, mask_to_rle
from budgetseg.errors import BudgetsegError
from budgetseg.instance.task import InstanceTask


def open_fixture(tmp_path: Path, data: dict | None = None):
    expected = write_coco(tmp_path / "ann.json", tmp_path / "images", data)
    return COCODataset(tmp_path / "ann.json", tmp_path / "images"), expected


def test_categories_map_to_contiguous_ids(tmp_path: Path):
    ds, _ = open_fixture(tmp_path)
    assert ds.class_names == ["background", "car", "train", "zebra"]
    assert ds.category_ids == [3, 7, 90]


def test_round_trip_polygon_rle_and_crowd(tmp_path: Path):
    ds, expected = open_fixture(tmp_path)
    assert ds.ids == ["1", "42"] and len(ds) == 2
    for i, image_id in enumerate(ds.ids):
        sample = ds[i]
        lab = expected[image_id]
        assert sample.id == image_id
        assert sample.image.shape == (*lab.semantic.shape, 3)
        # Crowd -> 255 except where an instance lies; the small car stays on top of the larger zebra.
        np.testing.assert_array_equal(sample.semantic, lab.semantic)
        assert sample.semantic.dtype == np.uint8
        # Instances in annotation order: car (RLE), zebra (polygon), train (uncompressed RLE); no crowd.
        np.testing.assert_array_equal(sample.instance_masks, lab.masks)
        np.testing.assert_array_equal(sample.instance_classes, lab.classes)
        assert sample.instance_classes.dtype == np.int64


def test_without_image(tmp_path: Path):
    ds, expected = open_fixture(tmp_path)
    sample = ds.load("1", with_image=False)
    assert sample.image.shape == (H, W, 0)
    np.testing.assert_array_equal(sample.semantic, expected["1"].semantic)


def test_degenerate_polygons_are_not_instances(tmp_path: Path):
    data = coco_json()
    data["annotations"] = [
        {"id": 1, "image_id": 1, "category_id": 3, "segmentation": [[1, 1, 3, 1]]},  # 2 points: no area
        {"id": 2, "image_id": 1, "category_id": 3, "segmentation": []},
    ]
    ds, _ = open_fixture(tmp_path, data)
    sample = ds.load("1")
    assert sample.instance_masks.shape == (0, H, W)
    assert not sample.semantic.any()


def test_instance_annotation_round_trip(tmp_path: Path):
    mask = box(1, 4, 2, 7)
    ann = instance_annotation(mask, image_id=1, category_id=90, ann_id=5, score=0.75)
    assert ann["bbox"] == [2.0, 1.0, 5.0, 3.0]  # x, y, w, h
    assert ann["area"] == 15.0 and ann["iscrowd"] == 0 and ann["score"] == 0.75
    assert ann["id"] == 5 and ann["image_id"] == 1 and ann["category_id"] == 90
    np.testing.assert_array_equal(mask_utils.decode(ann["segmentation"]).astype(bool), mask)
    assert "score" not in instance_annotation(mask, 1, 90, 5)

    data = coco_json()
    data["annotations"] = [ann]
    ds, _ = open_fixture(tmp_path, json.loads(json.dumps(data)))  # JSON-serialisable as is
    sample = ds.load("1")
    np.testing.assert_array_equal(sample.instance_masks, mask[None])
    np.testing.assert_array_equal(sample.instance_classes, [3])


def test_mask_to_rle_is_json_text():
    rle = mask_to_rle(box(0, 2, 0, 2))
    assert rle["size"] == [H, W] and isinstance(rle["counts"], str)


def drop(key):
    def mutate(data):
        del data[key]

    return mutate


def set_ann(field, value, index=0):
    def mutate(data):
        data["annotations"][index][field] = value

    return mutate


# (name, mutation of the fixture JSON dict)
JSON_ERRORS = [
    ("no images", drop("images")),
    ("no annotations", drop("annotations")),
    ("no categories", drop("categories")),
    ("unknown image id", set_ann("image_id", 5)),
    ("unknown category", set_ann("category_id", 4)),
    ("no segmentation", lambda d: d["annotations"][0].pop("segmentation")),
    ("duplicate image id", lambda d: d["images"].append(dict(d["images"][0], file_name="c.jpg"))),
    ("duplicate category id", lambda d: d["categories"].append({"id": 3, "name": "auto"})),
]

LOAD_ERRORS = [
    ("odd polygon", set_ann("segmentation", [[0, 0, 6, 0, 6]], 1)),
    ("rle size", set_ann("segmentation", mask_to_rle(np.zeros((H, W + 1), bool)))),
    ("uncompressed rle too long", set_ann("segmentation", {"size": [H, W], "counts": [H * W + 5]}, 2)),
    ("garbage rle", set_ann("segmentation", {"size": [H, W], "counts": "!!garbage"})),
    ("segmentation type", set_ann("segmentation", 7)),
]


@pytest.mark.parametrize("mutate", [e[1] for e in JSON_ERRORS], ids=[e[0] for e in JSON_ERRORS])
def test_bad_json_content_names_the_json(tmp_path: Path, mutate):
    data = coco_json()
    mutate(data)
    with pytest.raises(BudgetsegError) as info:
        open_fixture(tmp_path, data)
    assert str(tmp_path / "ann.json") in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("mutate", [e[1] for e in LOAD_ERRORS], ids=[e[0] for e in LOAD_ERRORS])
def test_bad_segmentation_names_the_json(tmp_path: Path, mutate):
    data = coco_json()
    mutate(data)
    ds, _ = open_fixture(tmp_path, data)
    with pytest.raises(BudgetsegError) as info:
        ds.load("1")
    assert str(tmp_path / "ann.json") in str(info.value) and "annotation" in str(info.value)


@pytest.mark.parametrize(
    ("content", "problem"),
    [(None, "missing"), ('{"images": [', "invalid JSON"), ("[1, 2]", "JSON object"), (b"\xff\xfe{", "JSON")],
)
def test_unreadable_json(tmp_path: Path, content, problem):
    path = tmp_path / "ann.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    (tmp_path / "images").mkdir()
    with pytest.raises(BudgetsegError, match=problem) as info:
        COCODataset(path, tmp_path / "images")
    assert str(path) in str(info.value)


@pytest.mark.parametrize("with_image", [True, False])
@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: (d / "a.jpg").unlink(),
        lambda d: (d / "a.jpg").write_bytes(b"not a jpeg"),
        lambda d: write_jpeg(d / "a.jpg", H, W + 1),
    ],
    ids=["missing", "unreadable", "size differs from json"],
)
def test_bad_image_names_the_image(tmp_path: Path, mutate, with_image):
    ds, _ = open_fixture(tmp_path)
    mutate(tmp_path / "images")
    with pytest.raises(BudgetsegError) as info:
        ds.load("1", with_image=with_image)
    assert str(tmp_path / "images" / "a.jpg") in str(info.value)


def test_missing_image_folder(tmp_path: Path):
    write_coco(tmp_path / "ann.json", tmp_path / "images")
    with pytest.raises(BudgetsegError, match="image folder"):
        COCODataset(tmp_path / "ann.json", tmp_path / "elsewhere")


def test_crowd_regions_of_a_class_travel_apart_from_void(tmp_path: Path):
    """The fixture's crowd region (category 3, car -> class 1) is 255 in the semantic mask and kept whole in
    Sample.crowd (also where the zebra covers it); a region of a category named `void` is 255 and no crowd."""
    data = coco_json()
    data["categories"].append({"id": 5, "name": "void"})
    void = box(5, 6, 4, 6)
    data["annotations"].append({"id": 14, "image_id": 1, "category_id": 5, "segmentation": mask_to_rle(void)})
    ds, _ = open_fixture(tmp_path, data)
    sample = ds.load("1")
    assert [c for c, _ in sample.crowd] == [1]
    np.testing.assert_array_equal(sample.crowd[0][1], box(0, 1, 0, W) | box(5, 6, 0, 4))
    assert (sample.semantic[void] == 255).all()
    assert ds.load("42").crowd == []


@pytest.mark.parametrize("cls, ap", [(1, 1.0), (3, 5 / 6)])
def test_instance_score_ignores_a_detection_on_a_crowd_region_of_its_class(tmp_path: Path, cls: int, ap: float):
    """Perfect detections of car, zebra, train (0.5) and one more (0.9) on the crowd pixels no object covers.
    As a car (the crowd region's class) it is ignored: every AP 1. As a zebra it is a false positive ranked first:
    zebra AP 1/2 (precision 0, 1/2 at recall 0, 1) in both families, car and train 1 -> (1 + 1/2 + 1) / 3 = 5/6."""
    ds, _ = open_fixture(tmp_path)
    sample = ds.load("1")
    task = InstanceTask(ds.class_names)
    ev = task.evaluator()
    crowd_only = sample.crowd[0][1] & (sample.semantic == 255)  # row 0 columns 6-7, row 5 columns 0-3
    preds = [(m, int(c), 0.5) for m, c in zip(sample.instance_masks, sample.instance_classes, strict=True)]
    task.score(ev, sample, [*preds, (crowd_only, cls, 0.9)])
    r = ev.evaluate()
    assert (r["gt_instances"], r["predictions"]) == (3, 4)
    assert r["ap"] == pytest.approx(ap) and r["ap50"] == pytest.approx(ap) and r["ap_r_mean"] == pytest.approx(ap)


def test_an_exports_sample_ids_name_its_images_so_the_same_photos_elsewhere_count_as_labelled(tmp_path: Path):
    from budgetseg.data.pool import ImageFolder, Pool

    data = coco_json()
    for im, sid in zip(data["images"], ("street_a", "street_b"), strict=True):
        im["sample_id"] = sid  # as budgetseg's COCO export writes it
    ds, _ = open_fixture(tmp_path, data)
    assert ds.ids == ["street_a", "street_b"]
    assert len(ds.load("street_a", with_image=False).instance_masks) == 3  # annotations follow image_id 1
    photos = tmp_path / "photos"
    for name in ("street_a.jpg", "street_b.jpg", "street_c.jpg"):
        write_jpeg(photos / name, H, W)
    pool = Pool(ds, [ImageFolder(photos, ds.class_names)])
    assert pool.ids == ["street_a", "street_b", "street_c"] and pool.skipped == 2


def test_a_coco_file_that_numbers_its_images_still_finds_them_among_the_photos(tmp_path: Path):
    """Label Studio's COCO export: ids 1, 42 and uploaded file names; the photos' folder holds the same files by
    their own names. They are the labelled ones, not pseudo-labelled again."""
    from budgetseg.data.pool import ImageFolder, Pool

    data = coco_json()
    data["images"][1]["file_name"] = "0a1b2c3d-b.jpg"  # as Label Studio names an upload
    ds, _ = open_fixture(tmp_path, data)
    assert ds.ids == ["1", "42"]
    photos = tmp_path / "photos"
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        write_jpeg(photos / name, H, W)
    pool = Pool(ds, [ImageFolder(photos, ds.class_names)])
    assert pool.ids == ["1", "42", "c"] and pool.skipped == 2


def test_a_sample_id_given_twice_is_refused(tmp_path: Path):
    data = coco_json()
    for im in data["images"]:
        im["sample_id"] = "same"
    with pytest.raises(BudgetsegError, match=r"ann\.json.*sample_id same appears twice"):
        open_fixture(tmp_path, data)
