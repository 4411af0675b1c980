"""Masks from boxes (data/boxmask.py): GrabCut inside a box finds an object that stands out from its surroundings."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from budgetseg.data.boxmask import (
    FG,
    UNSURE,
    BoxMaskOptions,
    box_estimate,
    box_labels,
    boxes_of,
    boxes_only,
    inner_box,
    with_box_masks,
)
from budgetseg.data.coco import mask_to_rle
from budgetseg.data.sample import IGNORE, Sample


def disc(h: int, w: int, cy: int, cx: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A noisy grey-green background with a red disc (r 14 at (30, 30)) and a blue square (rows and columns
    40-60) that overlaps the disc's box; returns (image uint8 (72, 80, 3), true masks bool (2, 72, 80))."""
    rng = np.random.default_rng(seed)
    h, w = 72, 80
    image = (rng.normal((110, 130, 100), 12, (h, w, 3))).clip(0, 255)
    red, blue = disc(h, w, 30, 30, 14), np.zeros((h, w), bool)
    blue[40:61, 40:61] = True
    image[red] = rng.normal((200, 40, 40), 10, (red.sum(), 3)).clip(0, 255)
    image[blue] = rng.normal((40, 50, 210), 10, (blue.sum(), 3)).clip(0, 255)
    return image.astype(np.uint8), np.stack([red, blue])


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_boxes_of_are_tight_and_exclusive():
    masks = np.zeros((3, 10, 12), bool)
    masks[0, 2:5, 3:9] = True
    masks[1, 9, 11] = True
    assert boxes_of(masks).tolist() == [[3, 2, 9, 5], [11, 9, 12, 10], [0, 0, 0, 0]]


def test_grabcut_finds_the_object_in_its_box_and_leaves_its_outline_unsure():
    image, (red, _) = scene()
    assert iou(box_estimate(image, boxes_of(red[None])[0], BoxMaskOptions(band=0)) == FG, red) > 0.95
    est = box_estimate(image, boxes_of(red[None])[0])
    assert red[est == FG].mean() > 0.98 and (est[red] != 0).mean() > 0.98  # FG inside the disc, the rest unsure
    outline = red & ~disc(*red.shape, 30, 30, 11)
    assert (est[outline] == UNSURE).mean() > 0.5
    x0, y0, x1, y1 = boxes_of(red[None])[0]
    outside = np.ones_like(red)
    outside[y0:y1, x0:x1] = False
    assert not est[outside].any()  # nothing beyond the box


def test_same_box_same_mask():
    image, masks = scene()
    box = boxes_of(masks)[1]
    assert np.array_equal(box_estimate(image, box), box_estimate(image, box))


def test_a_box_grabcut_finds_nothing_in_falls_back_to_the_inner_box():
    rng = np.random.default_rng(1)
    image = rng.normal(120, 5, (40, 40, 3)).clip(0, 255).astype(np.uint8)  # no object: nothing stands out
    est = box_estimate(image, (8, 8, 32, 32), BoxMaskOptions(min_fill=0.9))
    assert np.array_equal(est[8:32, 8:32], inner_box((24, 24), 0.5))
    assert (est[14:26, 14:26] == FG).all() and est[8, 8] == UNSURE and est[:8].sum() == 0


@pytest.mark.parametrize("box", [(5, 5, 6, 20), (5, 5, 5, 5)])
def test_a_box_too_thin_to_cut_is_all_unsure(box):
    image, _ = scene()
    est = box_estimate(image, box)
    x0, y0, x1, y1 = box
    assert (est[y0:y1, x0:x1] == UNSURE).all() and est.sum() == UNSURE * (x1 - x0) * (y1 - y0)


def test_box_labels_paint_the_smaller_box_on_top_and_keep_one_instance_per_box():
    image, masks = scene()
    big = np.zeros_like(masks[0])
    big[10:70, 10:70] = True  # a box round both objects, as of a large occluded thing behind them
    boxes = boxes_of(np.stack([big, masks[0], masks[1]]))
    semantic, inst, classes = box_labels(image, boxes, np.array([1, 2, 3]))
    assert semantic.dtype == np.uint8 and set(np.unique(semantic)) <= {0, 1, 2, 3, IGNORE}
    assert (semantic[masks[0] & disc(*big.shape, 30, 30, 10)] == 2).mean() > 0.9  # the disc's core: the disc
    assert (semantic[masks[1]] == 3).mean() > 0.7  # the square's pixels: the square, not the big box
    assert classes.tolist()[-2:] == [2, 3] and len(inst) == len(classes)
    assert not (inst[:, None] & inst[None]).sum(axis=(2, 3))[~np.eye(len(inst), dtype=bool)].any()  # disjoint


def scene_sample() -> Sample:
    image, masks = scene()
    semantic = np.zeros(masks.shape[1:], np.uint8)
    semantic[masks[0]], semantic[masks[1]] = 1, 2
    return Sample("s", image, semantic, masks, np.array([1, 2]))


def test_boxes_only_then_estimated_masks_come_back_close_to_the_true_ones():
    truth = scene_sample()
    boxed = boxes_only(truth)
    assert len(boxed.instance_masks) == 0 and boxed.box_classes.tolist() == [1, 2]
    assert boxed.boxes.tolist() == boxes_of(truth.instance_masks).tolist()
    assert (boxed.semantic[truth.instance_masks.any(0)] == IGNORE).all() and (boxed.semantic[0] == 0).all()
    est = with_box_masks(boxed)
    assert len(est.boxes) == 0 and est.instance_classes.tolist() == [1, 2]
    for m, t in zip(est.instance_masks, truth.instance_masks, strict=True):
        assert t[m].mean() > 0.98 and iou(m, t) > 0.6  # inside the object; the band is left unsure
    sure = est.semantic != IGNORE
    assert (est.semantic[sure] == truth.semantic[sure]).mean() > 0.99


def test_masks_a_sample_already_has_stay_on_top_of_estimates():
    truth = scene_sample()
    mixed = boxes_only(truth)
    mixed = Sample(
        "s",
        truth.image,
        mixed.semantic,
        truth.instance_masks[1:],
        truth.instance_classes[1:],
        boxes=mixed.boxes[:1],
        box_classes=mixed.box_classes[:1],
    )
    mixed.semantic[truth.instance_masks[1]] = 2
    est = with_box_masks(mixed)
    assert est.instance_classes.tolist() == [2, 1]
    assert np.array_equal(est.instance_masks[0], truth.instance_masks[1])  # the drawn mask untouched
    assert not (est.instance_masks[1] & truth.instance_masks[1]).any()
    assert (est.semantic[truth.instance_masks[1]] == 2).all()


def test_f_theta_trains_on_estimates_for_box_only_objects_kept_in_the_run_folder(tmp_path):
    from budgetseg.data.coco import COCODataset
    from budgetseg.data.pool import BoxMasked, Pool

    image, masks = scene()
    Image.fromarray(image).save(tmp_path / "a.png")
    x0, y0, x1, y1 = (int(v) for v in boxes_of(masks[:1])[0])
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": image.shape[1], "height": image.shape[0]}],
        "categories": [{"id": 1, "name": "ball"}, {"id": 2, "name": "tile"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [x0, y0, x1 - x0, y1 - y0]},  # a box, no mask
            {"id": 2, "image_id": 1, "category_id": 2, "segmentation": mask_to_rle(masks[1])},
        ],
    }
    (tmp_path / "ann.json").write_text(json.dumps(data))
    ds = COCODataset(tmp_path / "ann.json", tmp_path)
    raw = ds.load("1")
    assert raw.boxes.tolist() == [[x0, y0, x1, y1]] and raw.instance_classes.tolist() == [2]
    assert len(Pool(ds).load("1").boxes) == 1  # the pool itself reads the labels as they are (stats, exports)
    trained = BoxMasked(Pool(ds), tmp_path / "run" / "box_masks")
    s = trained.load("1", with_image=False)
    assert len(s.boxes) == 0 and s.instance_classes.tolist() == [2, 1]
    assert masks[0][s.instance_masks[1]].mean() > 0.98 and iou(s.instance_masks[1], masks[0]) > 0.6
    assert [p.name for p in (tmp_path / "run" / "box_masks").iterdir()] == ["1.npz"]
    again = BoxMasked(Pool(ds), tmp_path / "run" / "box_masks").load("1")  # another process, or a resumed run
    assert np.array_equal(again.semantic, s.semantic) and again.image.shape == image.shape
    assert np.array_equal(again.instance_masks, s.instance_masks)


@pytest.mark.parametrize(
    "bbox, problem",
    [([2, 2, 0, 5], "degenerate bbox"), ([70, 2, 20, 5], "outside its 80x72 image"), ([1, 2, 3], "4 numbers")],
)
def test_bad_boxes_are_one_line_errors_naming_the_json(tmp_path, bbox, problem):
    from budgetseg.data.coco import COCODataset
    from budgetseg.errors import BudgetsegError

    Image.fromarray(scene()[0]).save(tmp_path / "a.png")
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": 80, "height": 72}],
        "categories": [{"id": 1, "name": "ball"}],
        "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "segmentation": [], "bbox": bbox}],
    }
    (tmp_path / "ann.json").write_text(json.dumps(data))
    with pytest.raises(BudgetsegError, match=rf"ann\.json: annotation 7: .*{problem}"):
        COCODataset(tmp_path / "ann.json", tmp_path).load("1")


@pytest.mark.slow
def test_a_run_on_yolo_labels_with_boxes_trains_on_their_estimates(tmp_path):
    """A YOLO set whose labelled images are half polygons, half detection boxes, plus unlabelled images: the
    pipeline's pool gives the box images GrabCut's masks, and a short run goes through end to end."""
    from budgetseg.config import load_config
    from budgetseg.errors import BudgetsegError
    from budgetseg.pipeline import run
    from budgetseg.plan import open_pool_and_val

    root = tmp_path / "yolo"
    for split, n in (("train", 8), ("val", 3)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for k in range(n):
            image, masks = scene(seed=k)
            Image.fromarray(image).save(root / "images" / split / f"{split}{k}.png")
            if split == "train" and k >= 4:
                continue  # unlabelled: to pseudo-label
            h, w = masks.shape[1:]
            lines = []
            for cls, (x0, y0, x1, y1) in enumerate(boxes_of(masks)):
                if split == "train" and k % 2:  # a detection box: class cx cy w h
                    lines.append(f"{cls} {(x0 + x1) / 2 / w} {(y0 + y1) / 2 / h} {(x1 - x0) / w} {(y1 - y0) / h}")
                else:  # the object's outline as a polygon (its box's corners for the square, an octagon for the disc)
                    ang = np.linspace(0, 2 * np.pi, 9)[:-1] + np.pi / 8
                    pts = (
                        [(30 + 14.5 * np.cos(a), 30 + 14.5 * np.sin(a)) for a in ang]
                        if cls == 0
                        else [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
                    )
                    lines.append(f"{cls} " + " ".join(f"{x / w:.4f} {y / h:.4f}" for x, y in pts))
            (root / "labels" / split / f"{split}{k}.txt").write_text("\n".join(lines) + "\n")
    (root / "data.yaml").write_text("names: [ball, tile]\n")
    sets = [f"data.root={root}", "data.format=yolo", "data.val_split=val", "data.strong=auto", "data.size=64"]
    sets += [f"{net}.{k}" for net in ("annotator", "segmenter") for k in ("iterations=4", "batch_size=2")]
    cfg = load_config(None, sets)
    pool, ids, _, _ = open_pool_and_val(cfg)
    assert pool.load("train1").box_classes.tolist() == [1, 2] and len(pool.load("train0").boxes) == 0
    res = run(cfg, tmp_path / "run")
    assert res["n_strong"] == 4 and res["n_pseudo"] == 4
    cost = json.loads((tmp_path / "run" / "cost.json").read_text())
    spi = cost["seconds_per_image"]
    assert cost["box_images"] == 2 and cost["statistics"]["objects_per_image"] == 2  # boxes count as objects
    assert cost["strong_labels"]["seconds"] == pytest.approx(2 * spi["full"] + 2 * spi["bb"])  # boxes cost boxes
    assert sorted(p.name for p in (tmp_path / "run" / "box_masks").iterdir()) == ["train1.npz", "train3.npz"]
    with np.load(tmp_path / "run" / "box_masks" / "train1.npz") as z:
        assert (z["semantic"] == 1).sum() > 200 and z["classes"].tolist() == [1, 2]  # the disc's core, estimated

    (root / "labels" / "val" / "val0.txt").write_text("0 0.5 0.5 0.2 0.2\n")  # val needs masks to score
    with pytest.raises(BudgetsegError, match=r"val0\.png: 1 val object\(s\) have a box and no mask"):
        run(cfg, tmp_path / "run2")
    assert not (tmp_path / "run2" / "annotator").exists()


def voc_xml(objects: list[tuple[str, tuple, int]]) -> str:
    body = "".join(
        f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b, d in objects
    )
    return f"<annotation><size><width>80</width><height>72</height></size>{body}</annotation>"


def write_voc_detection(root, objects) -> None:
    (root / "JPEGImages").mkdir(parents=True)
    (root / "Annotations").mkdir()
    Image.fromarray(scene()[0]).save(root / "JPEGImages" / "a.jpg")
    Image.fromarray(scene()[0]).save(root / "JPEGImages" / "b.jpg")  # no XML: unlabelled
    (root / "classes.txt").write_text("background\nball\ntile\n")
    (root / "Annotations" / "a.xml").write_text(voc_xml(objects))


def test_voc_detection_xml_gives_boxes_one_based_inclusive_and_difficult_ones_ignored(tmp_path):
    from budgetseg.data.readers import open_dataset
    from budgetseg.data.stats import dataset_stats

    write_voc_detection(
        tmp_path, [("ball", (17, 17, 44, 44), 0), ("tile", (41, 41, 61, 61), 0), ("ball", (1, 1, 5, 5), 1)]
    )
    ds = open_dataset("voc", tmp_path)
    assert ds.ids == ["a", "b"] and ds.has_labels("a") and not ds.has_labels("b") and ds.has_instances
    s = ds.load("a")
    assert s.boxes.tolist() == [[16, 16, 44, 44], [40, 40, 61, 61]] and s.box_classes.tolist() == [1, 2]
    assert (s.semantic[0:5, 0:5] == IGNORE).all() and (s.semantic[16:44, 16:44] == IGNORE).all()
    assert (s.semantic[40:61, 40:61] == IGNORE).all() and s.semantic[44, 16] == 0
    assert s.semantic[70, 70] == 0 and len(s.instance_masks) == 0
    st = dataset_stats(ds)
    assert st.images == 1 and st.box_objects == 2 and st.objects_per_image == 2


@pytest.mark.parametrize(
    "objects, problem",
    [
        ([("cat", (1, 1, 5, 5), 0)], "object 1: class 'cat' is not one of"),
        ([("ball", (9, 1, 5, 5), 0)], "object 1: degenerate box"),
        ([("ball", (1, 1, 5, 5), 0), ("ball", (1, 1, 90, 5), 0)], "object 2: box .* outside its 80x72 image"),
        ([("ball", (1, 1, "x", 5), 0)], "object 1: bndbox needs numbers"),
    ],
)
def test_bad_voc_xml_is_a_one_line_error_naming_the_file(tmp_path, objects, problem):
    from budgetseg.data.readers import open_dataset
    from budgetseg.errors import BudgetsegError

    write_voc_detection(tmp_path, objects)
    with pytest.raises(BudgetsegError, match=rf"a\.xml: {problem}"):
        open_dataset("voc", tmp_path).load("a")
    (tmp_path / "Annotations" / "a.xml").write_text("<annotation><object>")
    with pytest.raises(BudgetsegError, match=r"a\.xml: invalid XML"):
        open_dataset("voc", tmp_path).load("a")


def test_void_inside_a_box_stays_ignored_once_the_box_is_estimated(tmp_path):
    """A crowd box inside an object's box (COCO), a difficult box overlapping one (VOC): ignored before and after."""
    from budgetseg.data.coco import COCODataset
    from budgetseg.data.readers import open_dataset

    image, masks = scene()
    Image.fromarray(image).save(tmp_path / "a.png")
    x0, y0, x1, y1 = (int(v) for v in boxes_of(masks[:1])[0])
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": 80, "height": 72}],
        "categories": [{"id": 1, "name": "ball"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [x0, y0, x1 - x0, y1 - y0]},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [26, 26, 8, 8], "iscrowd": 1},
        ],
    }
    (tmp_path / "ann.json").write_text(json.dumps(data))
    est = with_box_masks(COCODataset(tmp_path / "ann.json", tmp_path).load("1"))
    assert (est.semantic[26:34, 26:34] == IGNORE).all() and not est.instance_masks[:, 26:34, 26:34].any()
    assert (est.semantic[masks[0]] == 1).mean() > 0.5  # the rest of the disc is estimated as usual

    voc = tmp_path / "voc"
    write_voc_detection(voc, [("ball", (x0 + 1, y0 + 1, x1, y1), 0), ("ball", (27, 27, 34, 34), 1)])
    est = with_box_masks(open_dataset("voc", voc).load("a"))
    assert (est.semantic[26:34, 26:34] == IGNORE).all() and (est.semantic[masks[0]] == 1).mean() > 0.5


def test_pascal_vocs_own_layout_keeps_images_without_masks_unlabelled(tmp_path):
    from budgetseg.data.readers import open_dataset

    write_voc_detection(tmp_path, [("ball", (17, 17, 44, 44), 0)])
    (tmp_path / "SegmentationClass").mkdir()  # VOC2012 itself: masks for some images, XML for all
    Image.fromarray(np.zeros((72, 80), np.uint8)).save(tmp_path / "SegmentationClass" / "b.png")
    ds = open_dataset("voc", tmp_path)
    assert ds.has_labels("b") and not ds.has_labels("a") and not ds.has_instances
    assert len(ds.load("b").boxes) == 0


def test_a_background_object_in_voc_xml_is_refused(tmp_path):
    from budgetseg.data.readers import open_dataset
    from budgetseg.errors import BudgetsegError

    write_voc_detection(tmp_path, [("background", (1, 1, 5, 5), 0)])
    with pytest.raises(BudgetsegError, match=r"a\.xml: object 1: class 'background' is not one of"):
        open_dataset("voc", tmp_path).load("a")


def test_box_edges_that_round_to_six_decimals_keep_their_pixels(tmp_path):
    """YOLO writes 6 decimals: 0.301 * 500 is 150.50000000000003; COCO boxes at the image's edge stay in it."""
    from budgetseg.data.coco import box_of
    from budgetseg.data.folders import pixel_box

    corners = np.array([[0.301 - 0.202 / 2, 0.5 - 0.25], [0.301 + 0.202 / 2, 0.5 + 0.25]])
    assert pixel_box(corners, 400, 500).tolist() == [100, 100, 201, 300]
    assert box_of(tmp_path, {"id": 1, "bbox": [79.5, 2, 0.5, 5]}, 72, 80).tolist() == [79, 2, 80, 7]


def test_each_boxed_image_is_estimated_once(tmp_path, monkeypatch):
    from budgetseg.data import pool as pool_module
    from budgetseg.data.readers import open_dataset

    calls = []
    real = pool_module.with_box_masks
    monkeypatch.setattr(pool_module, "with_box_masks", lambda s, **kw: calls.append(s.id) or real(s, **kw))
    write_voc_detection(tmp_path, [("ball", (17, 17, 44, 44), 0)])
    ds = pool_module.BoxMasked(pool_module.Pool(open_dataset("voc", tmp_path)), tmp_path / "box_masks")
    first, second = ds.load("a", with_image=False), ds.load("a")
    assert calls == ["a"] and np.array_equal(first.instance_masks, second.instance_masks)
