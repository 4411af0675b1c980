"""Readers of images and label files paired by stem (folders, camvid, cvppp, yolo), label sets without background,
void values, and what they change in statistics, costs and image-level labels."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from budgetseg.cli import main
from budgetseg.cost import CostModel
from budgetseg.data.folders import CAMVID_CLASSES
from budgetseg.data.readers import LabelOptions, open_dataset
from budgetseg.data.sample import IGNORE
from budgetseg.data.stats import dataset_stats
from budgetseg.errors import BudgetsegError
from budgetseg.weak import from_dataset, read_weak_labels

H, W = 12, 16


def image(path: Path, mode: str = "RGB", seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 255, (H, W, len(mode)), dtype=np.uint8)
    Image.fromarray(arr, mode).save(path)


def index_png(path: Path, arr: np.ndarray, mode: str = "L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr.astype(np.uint8), "L")
    if mode == "P":
        im = im.convert("P")
        im.putpalette([v for i in range(256) for v in ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256)])
    im.save(path)


def two_regions(a: int, b: int, void: int | None = None) -> np.ndarray:
    """Left half class a, right half class b; a void column in the middle when given."""
    arr = np.full((H, W), a, np.uint8)
    arr[:, W // 2 :] = b
    if void is not None:
        arr[:, W // 2] = void
    return arr


def write_camvid(root: Path) -> None:
    """SegNet's layout: train/, trainannot/, train.txt naming /SegNet/CamVid/... pairs; void 11 in one image."""
    lines = []
    for k, (a, b) in enumerate([(0, 3), (3, 8), (1, 2)]):
        name = f"0001TP_00{k}.png"
        image(root / "train" / name, seed=k)
        index_png(root / "trainannot" / name, two_regions(a, b, 11 if k == 0 else None))
        lines.append(f"/SegNet/CamVid/train/{name} /SegNet/CamVid/trainannot/{name}")
    image(root / "train" / "0001TP_999.png")  # not listed: not in the split
    (root / "train.txt").write_text("\n".join(lines) + "\n")


def test_camvid_reads_segnet_layout_without_background_and_with_void(tmp_path: Path, capsys):
    write_camvid(tmp_path)
    ds = open_dataset("camvid", tmp_path, "train")
    assert ds.ids == ["0001TP_000", "0001TP_001", "0001TP_002"]
    assert ds.class_names == CAMVID_CLASSES and not ds.background and not ds.has_instances
    first = ds.load("0001TP_000")
    assert first.image.shape == (H, W, 3)
    assert (first.semantic[:, W // 2] == 255).all()  # void 11 -> ignored
    assert set(np.unique(first.semantic)) == {0, 3, 255}
    stats = dataset_stats(ds)
    # sky (class 0) is a class: counted in C, in the classes per image and in the per-class tables
    assert stats.classes == 11 and stats.classes_per_image == 2.0 and not stats.background
    assert stats.per_class_images["sky"] == 1 and stats.per_class_images["road"] == 2
    assert main(["stats", "--format", "camvid", "--root", str(tmp_path), "--split", "train", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["classes"] == 11 and printed["images"] == 3
    assert main(["cost", "--format", "camvid", "--root", str(tmp_path), "--split", "train"]) == 0
    says = capsys.readouterr().out.splitlines()  # the Full row's 5400 s is explained above the table
    assert says[1].startswith("no background class: a full label paints every pixel, priced per image")


def test_a_label_set_without_background_is_costed_on_all_its_classes_per_image():
    vocish = CostModel().seconds_per_image(dataset_stats_like(11, 2.0, 3.0, dense=False))
    dense = CostModel(dense_s=600.0).seconds_per_image(dataset_stats_like(11, 2.0, 3.0, dense=True))
    assert dense["il"] == vocish["il"] == 11.0  # every class verified
    assert dense["full"] == 600.0 and dense["assisted"] == pytest.approx(600.0 * 14 / 79)
    assert vocish["full"] == pytest.approx(9 + 3 * 79)


def dataset_stats_like(c, k, n, dense):
    from budgetseg.cost import LabelStats

    return LabelStats(c, k, n, dense)


def test_image_level_labels_of_semantic_only_data_come_from_the_masks(tmp_path: Path):
    write_camvid(tmp_path)
    ds = open_dataset("camvid", tmp_path, "train")
    weak = from_dataset(ds, ds.ids)
    assert weak == {"0001TP_000": {0: 1, 3: 1}, "0001TP_001": {3: 1, 8: 1}, "0001TP_002": {1: 1, 2: 1}}
    (tmp_path / "il.csv").write_text("image_id,class,count\n0001TP_000,0,1\n0001TP_000,road,0\n0001TP_001,sky,2\n")
    assert read_weak_labels(tmp_path / "il.csv", ds.class_names, first=0) == {
        "0001TP_000": {0: 1},
        "0001TP_001": {0: 2},
    }
    with pytest.raises(BudgetsegError, match="line 2: unknown class '0' \\(classes: car, road, or ids 1..2\\)"):
        read_weak_labels(tmp_path / "il.csv", ["background", "car", "road"], first=1)


def test_restricting_to_image_labels_keeps_class_zero_only_as_a_background():
    import torch

    from budgetseg.semantic.task import restrict_to_image_labels

    probs = torch.full((1, 3, 1, 1), 1 / 3)
    with_bg = restrict_to_image_labels(probs, [{2: 1}], background=True)[0, :, 0, 0]
    without = restrict_to_image_labels(probs, [{2: 1}], background=False)[0, :, 0, 0]
    assert with_bg.tolist() == pytest.approx([0.5, 0.0, 0.5])
    assert without.tolist() == pytest.approx([0.0, 0.0, 1.0])


def write_folders(root: Path, background: bool) -> None:
    for k, stem in enumerate(["b", "a", "c"]):
        image(root / "images" / f"{stem}.{'jpg' if k else 'png'}", seed=k)
    index_png(root / "masks" / "a.png", two_regions(0, 2, 7))
    index_png(root / "masks" / "b.png", two_regions(1, 1))
    index_png(root / "masks" / "orphan.png", two_regions(1, 1))  # a mask without an image: left out
    (root / "classes.txt").write_text("background\nroad\ncar\n" if background else "sky\nroad\ncar\n")


def test_folders_pairs_by_stem_any_extension_and_partly_labelled(tmp_path: Path):
    write_folders(tmp_path, background=True)
    ds = open_dataset("folders", tmp_path, None, labels=LabelOptions(void=(7,)))
    assert ds.ids == ["a", "b", "c"] and ds.class_names == ["background", "road", "car"] and ds.background
    assert ds.image_path("b").suffix == ".png" and ds.image_path("a").suffix == ".jpg"
    assert ds.has_labels("a") and not ds.has_labels("c")  # an image without a mask is unlabeled
    assert (ds.load("a").semantic[:, W // 2] == 255).all()
    stats = dataset_stats(ds)
    assert stats.images == 2 and stats.classes == 2 and stats.classes_per_image == 1.0  # background not counted
    no_bg = open_dataset("folders", tmp_path, None, labels=LabelOptions(background=False, void=(7,)))
    assert dataset_stats(no_bg).classes == 3 and dataset_stats(no_bg).classes_per_image == 1.5


def test_folders_split_files_and_numbered_classes(tmp_path: Path):
    write_folders(tmp_path, background=True)
    (tmp_path / "classes.txt").unlink()
    (tmp_path / "pool.txt").write_text("a\nc\n")
    ds = open_dataset("folders", tmp_path, "pool", labels=LabelOptions(void=(7,)))
    assert ds.ids == ["a", "c"] and ds.class_names == ["background", "class1", "class2"]
    elsewhere = tmp_path / "splits" / "mine.txt"
    elsewhere.parent.mkdir()
    elsewhere.write_text("b\n")
    assert open_dataset("folders", tmp_path, str(elsewhere)).ids == ["b"]
    (tmp_path / "bad.txt").write_text("a\nzzz\n")
    with pytest.raises(BudgetsegError, match=r"bad\.txt: 1 listed id\(s\) have no image .* 'zzz'"):
        open_dataset("folders", tmp_path, "bad")
    assert open_dataset("folders", tmp_path, None).class_names[-1] == "class7"  # 7 is a class when not void
    (tmp_path / "classes.txt").write_text("background\nroad\ncar\n")
    with pytest.raises(BudgetsegError, match=r"a\.png: class id\(s\) \[7\] outside the label set 0..2"):
        open_dataset("folders", tmp_path, None).load("a")


def write_cvppp(root: Path) -> None:
    """Two plants (RGBA photos, palette leaf labels: 3 and 2 leaves) and one without labels."""
    for k, leaves in enumerate([3, 2, 0]):
        image(root / f"plant00{k}_rgb.png", mode="RGBA", seed=k)
        if leaves:
            ids = np.zeros((H, W), np.uint8)
            for leaf in range(1, leaves + 1):
                ids[:, (leaf - 1) * 4 : leaf * 4] = leaf
            index_png(root / f"plant00{k}_label.png", ids, mode="P")
            index_png(root / f"plant00{k}_fg.png", (ids > 0).astype(np.uint8))


def test_cvppp_counts_leaves_exactly(tmp_path: Path, capsys):
    write_cvppp(tmp_path)
    ds = open_dataset("cvppp", tmp_path, None)
    assert ds.ids == ["plant000", "plant001", "plant002"] and ds.class_names == ["background", "leaf"]
    plant = ds.load("plant000")
    assert plant.image.shape == (H, W, 3)  # alpha dropped
    assert plant.instance_masks.shape == (3, H, W) and plant.instance_classes.tolist() == [1, 1, 1]
    assert set(np.unique(plant.semantic)) == {0, 1}
    assert not ds.has_labels("plant002")
    assert main(["stats", "--format", "cvppp", "--root", str(tmp_path), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["images"] == 2 and printed["objects_per_image"] == 2.5 and not printed["objects_estimated"]
    assert printed["unlabeled"] == 1  # plant002 has no label file
    (tmp_path / "some.txt").write_text("plant001_rgb.png\nplant000\n")  # `ls *_rgb.png` lines, or ids
    assert open_dataset("cvppp", tmp_path, str(tmp_path / "some.txt")).ids == ["plant001", "plant000"]


def test_instance_masks_folder_with_a_named_class(tmp_path: Path):
    write_cvppp(tmp_path / "src")
    for k in range(3):
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "src" / f"plant00{k}_rgb.png").rename(tmp_path / "images" / f"p{k}.png")
        label = tmp_path / "src" / f"plant00{k}_label.png"
        if label.is_file():
            (tmp_path / "inst").mkdir(exist_ok=True)
            label.rename(tmp_path / "inst" / f"p{k}.png")
    labels = LabelOptions(instance_masks=tmp_path / "inst", instance_class="leaf")
    ds = open_dataset("folders", tmp_path, None, labels=labels)
    assert ds.class_names == ["background", "leaf"] and ds.has_instances
    assert len(ds.load("p1").instance_masks) == 2 and not ds.has_labels("p2")


def write_yolo(root: Path) -> None:
    for stem in ("x", "y", "z"):
        image(root / "images" / "train" / f"{stem}.jpg")
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "train" / "x.txt").write_text("1 0 0 0.5 0 0.5 1 0 1\n0 0.5 0 1 0 1 1 0.5 1\n")
    (root / "labels" / "train" / "y.txt").write_text("")  # labelled: no object
    (root / "data.yaml").write_text("names: {0: cat, 1: dog}\n")


def test_yolo_polygons_become_instances(tmp_path: Path):
    write_yolo(tmp_path)
    ds = open_dataset("yolo", tmp_path, "train")
    assert ds.class_names == ["background", "cat", "dog"] and ds.ids == ["x", "y", "z"]
    x = ds.load("x")
    assert x.instance_classes.tolist() == [2, 1]
    assert x.instance_masks[0][:, : W // 2 - 1].all() and not x.instance_masks[0][:, W // 2 + 1 :].any()
    assert (x.semantic[:, : W // 2 - 1] == 2).all() and (x.semantic[:, W // 2 + 1 :] == 1).all()
    assert len(ds.load("y").instance_masks) == 0 and ds.has_labels("y") and not ds.has_labels("z")


@pytest.mark.parametrize(
    "line, problem",
    [
        ("5 0 0 1 0 1 1", "class index 5 outside 0..1"),
        ("0 0.5 0.5 0 0.2", "degenerate box"),
        ("0 0.9 0.5 0.4 0.2", "a box must lie in its image"),
        ("0 0 0 1 0 1 1 0", "a box .* or a polygon"),
        ("0 0 0 1 0 1", "3 or more x y pairs"),
        ("0 0 0 1.5 0 1 1", "normalised"),
        ("cat 0 0 1 0 1 1", "expected a class index"),
    ],
)
def test_yolo_bad_lines_are_one_line_errors(tmp_path: Path, line: str, problem: str):
    write_yolo(tmp_path)
    (tmp_path / "labels" / "train" / "x.txt").write_text(f"0 0 0 1 0 1 1\n{line}\n")
    with pytest.raises(BudgetsegError, match=rf"x\.txt: line 2: .*{problem}"):
        open_dataset("yolo", tmp_path, "train").load("x")


def test_yolo_box_lines_are_objects_known_by_their_box(tmp_path: Path):
    write_yolo(tmp_path)
    (tmp_path / "labels" / "train" / "y.txt").write_text("1 0.25 0.5 0.5 0.5\n0 0 0 0.25 0 0.25 0.25 0 0.25\n")
    ds = open_dataset("yolo", tmp_path, "train")
    y = ds.load("y")
    x0, y0 = 0, int(0.25 * H)
    assert y.boxes.tolist() == [[x0, y0, W // 2, int(np.ceil(0.75 * H))]] and y.box_classes.tolist() == [2]
    assert (y.semantic[y0 + 1 : int(0.75 * H) - 1, 1 : W // 2 - 1] == IGNORE).all()  # unknown inside the box
    assert y.instance_classes.tolist() == [1] and (y.semantic[0, 0] == 1)  # the polygon painted over it
    assert (y.semantic[:, W // 2 + 1 :] == 0).all()  # outside every box: background
    assert len(ds.load("x").boxes) == 0


def test_label_options_that_do_not_apply_are_refused(tmp_path: Path):
    write_cvppp(tmp_path)
    with pytest.raises(BudgetsegError, match="do not apply"):
        open_dataset("cvppp", tmp_path, None, labels=LabelOptions(background=False))
    with pytest.raises(BudgetsegError, match="data.void"):
        open_dataset("coco", tmp_path, None, labels=LabelOptions(void=(3,)))


@pytest.mark.slow
def test_a_camvid_run_at_its_working_resolution_end_to_end(tmp_path: Path):
    """A CamVid-layout set (no background, void 11) trained on crops of 32 px from frames at a shorter side of 48,
    evaluated and predicted whole at that scale; priced as a dense label set."""
    from budgetseg.config import load_config
    from budgetseg.loop.predict import predict_images
    from budgetseg.modelfile import load_model_file
    from budgetseg.pipeline import run

    root = tmp_path / "camvid"
    rng = np.random.default_rng(0)
    for split, n in (("train", 10), ("val", 4)):
        lines = []
        for k in range(n):
            name = f"{split}_{k:03d}.png"
            label = np.repeat(np.arange(6, dtype=np.uint8)[rng.permutation(6)], 16)[None].repeat(72, 0)[:, :96]
            label[:4] = 11
            (root / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray((label[..., None] * 40 + rng.integers(0, 20, (72, 96, 3))).astype(np.uint8)).save(
                root / split / name
            )
            index_png(root / f"{split}annot" / name, label)
            lines.append(f"/SegNet/CamVid/{split}/{name} /SegNet/CamVid/{split}annot/{name}")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    sets = [f"data.root={root}", "data.format=camvid", "data.scale=48", "data.size=32", "n_strong=4"]
    sets += [
        f"{net}.{k}" for net in ("annotator", "segmenter") for k in ("iterations=4", "batch_size=2", "epoch_iters=2")
    ]
    res = run(load_config(None, sets), tmp_path / "run")
    cost = json.loads((tmp_path / "run" / "cost.json").read_text())
    assert cost["statistics"]["dense"] and cost["statistics"]["classes"] == 11
    assert cost["seconds_per_image"]["full"] == 5400.0 and res["n_pseudo"] == 6
    assert set(res["segmentation_net"]["per_class_iou"]) == set(CAMVID_CLASSES)
    _, meta = load_model_file(tmp_path / "run" / "segmenter" / "model.pt")
    assert meta["scale"] == 48 and meta["size"] == 32 and meta["background"] is False
    summary = predict_images(tmp_path / "run", [root / "val"], tmp_path / "pred", progress=False)
    assert summary["labels"] == 4
    assert np.asarray(Image.open(tmp_path / "pred" / "val_000.png")).shape == (72, 96)
    # its labels exported to COCO keep sky (class 0); the export reads back (background false) and scores the run
    from budgetseg.evaluate import evaluate_run
    from budgetseg.loop.export import export_run

    export_run(tmp_path / "run", "coco", tmp_path / "coco")
    back = open_dataset("coco", tmp_path / "coco", "default", labels=LabelOptions(background=False))
    pool = open_dataset("camvid", root, "train")
    assert back.class_names == CAMVID_CLASSES
    for k in back.ids[:4]:  # the strong frames: the labels as read from CamVid
        sid = back.images[k]["sample_id"]
        np.testing.assert_array_equal(back.load(k).semantic, pool.load(sid).semantic)
    scored = evaluate_run(tmp_path / "run", "coco", tmp_path / "coco", "default")
    assert scored["val"]["images"] == 10 and set(scored["segmenter"]["per_class_iou"]) == set(CAMVID_CLASSES)


def test_stats_count_box_only_objects(tmp_path: Path):
    write_yolo(tmp_path)
    (tmp_path / "labels" / "train" / "y.txt").write_text("1 0.25 0.5 0.5 0.5\n1 0.75 0.5 0.5 0.5\n")
    st = dataset_stats(open_dataset("yolo", tmp_path, "train"))
    assert st.images == 2 and st.box_objects == 2 and not st.objects_estimated
    assert st.per_class_instances == {"cat": 1, "dog": 3} and st.per_class_images == {"cat": 1, "dog": 2}
