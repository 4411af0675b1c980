"""Partly labelled pools, plain image folders, COCO layouts as annotation tools write them, the cost section and
resolved config paths: what a practitioner's own data looks like (no training here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures_data import write_coco, write_jpeg, write_lines, write_sbd, write_voc

from budgetseg.config import config_diff, load_config, to_dict
from budgetseg.data.pool import ImageFolder, Pool
from budgetseg.data.readers import open_dataset
from budgetseg.data.sample import image_size, read_image
from budgetseg.data.voc import VOCDataset
from budgetseg.dist import SINGLE
from budgetseg.errors import BudgetsegError
from budgetseg.plan import open_pool_and_val, prepare
from budgetseg.runlog import Logger


def partly_labelled(root: Path) -> None:
    """VOC fixture a, b, c with a's labels removed, plus d.png (another format, other size) and no split files."""
    write_voc(root)
    (root / "SegmentationClass" / "a.png").unlink()
    (root / "SegmentationObject" / "a.png").unlink()
    write_jpeg(root / "JPEGImages" / "tmp.jpg", 9, 5)
    (root / "JPEGImages" / "tmp.jpg").rename(root / "JPEGImages" / "d.png")  # a JPEG named .png still decodes
    for f in (root / "ImageSets").rglob("*.txt"):
        f.unlink()
    (root / "ImageSets" / "Segmentation").rmdir()
    (root / "ImageSets").rmdir()


def test_voc_without_split_files_takes_every_image_and_knows_which_are_labelled(tmp_path):
    partly_labelled(tmp_path)
    ds = VOCDataset(tmp_path)
    assert ds.ids == ["a", "b", "c", "d"]
    assert [ds.has_labels(i) for i in ds.ids] == [False, True, True, False]
    assert ds.image_path("d").name == "d.png"
    with pytest.raises(BudgetsegError, match="SegmentationClass/a.png: label file is missing"):
        ds.load("a")
    pool = Pool(ds)
    sample = pool.load("a")
    assert not sample.labeled and (sample.semantic == 255).all() and sample.image.shape == (6, 8, 3)
    assert pool.load("d").image.shape == (9, 5, 3) and pool.load("b").labeled


def test_voc_images_from_another_folder(tmp_path):
    """CVAT's Segmentation mask export without "save images": the masks here, the photos elsewhere."""
    write_voc(tmp_path / "cvat")
    (tmp_path / "cvat" / "JPEGImages").rename(tmp_path / "photos")
    ds = open_dataset("voc", tmp_path / "cvat", "train", images=tmp_path / "photos")
    assert ds.image_path("a") == tmp_path / "photos" / "a.jpg" and ds.load("a").image.shape == (6, 8, 3)


def test_image_folder_any_names_and_duplicates(tmp_path):
    write_jpeg(tmp_path / "img" / "Photo 1.JPG", 7, 3)
    write_jpeg(tmp_path / "img" / "b.jpeg", 4, 4)
    (tmp_path / "img" / "notes.txt").write_text("not an image")
    folder = ImageFolder(tmp_path / "img")
    assert folder.ids == ["Photo 1", "b"] and folder.load("Photo 1").image.shape == (7, 3, 3)
    write_jpeg(tmp_path / "img" / "b.png", 4, 4)
    with pytest.raises(BudgetsegError, match="b.png: two images share the name 'b'"):
        ImageFolder(tmp_path / "img")
    with pytest.raises(BudgetsegError, match="nosuch: image folder is missing"):
        ImageFolder(tmp_path / "nosuch")


def _prepare(cfg, out: Path):
    pool, ids, _, _ = open_pool_and_val(cfg)
    out.mkdir(parents=True)
    split, cost = prepare(cfg, out, pool, ids, False, False, SINGLE, Logger(out / "log.txt", True))
    return pool, split, cost


def test_auto_strong_with_an_unlabeled_folder(tmp_path):
    partly_labelled(tmp_path / "voc")
    write_jpeg(tmp_path / "photos" / "b.jpg", 6, 8)  # the labelled b again: the same photo, skipped
    write_jpeg(tmp_path / "photos" / "e.jpg", 11, 13)
    cfg = load_config(
        None, [f"data.root={tmp_path / 'voc'}", "data.strong=auto", f"data.unlabeled={tmp_path / 'photos'}"]
    )
    pool, split, cost = _prepare(cfg, tmp_path / "run")
    assert pool.skipped == 1 and pool.ids == ["a", "b", "c", "d", "e"]
    assert split.strong == ["b", "c"] and split.unlabeled == ["a", "d", "e"]
    assert cost["n_strong"] == 2 and cost["strong_from"] == "auto"
    assert cost["statistics_from"] == "measured on the 2 strong images' labels"
    # b holds one aeroplane, c nothing: k = n = 0.5 over the strong images; VOC's 20 classes
    assert cost["statistics"] == {"classes": 20, "classes_per_image": 0.5, "objects_per_image": 0.5, "dense": False}
    assert cost["seconds_per_image"]["full"] == pytest.approx(19.5 + 0.5 * 79)
    assert not cost["objects_estimated"]


def test_ids_file_strong_errors_name_the_file(tmp_path):
    partly_labelled(tmp_path / "voc")
    ids = tmp_path / "ids.txt"
    base = [f"data.root={tmp_path / 'voc'}", f"data.strong={ids}"]
    write_lines(ids, ["b", "zz"])
    with pytest.raises(BudgetsegError, match=r"ids.txt: 1 id\(s\) are not in the pool, e.g. 'zz'"):
        _prepare(load_config(None, base), tmp_path / "r1")
    write_lines(ids, ["b", "a"])
    with pytest.raises(BudgetsegError, match=r"ids.txt: 1 listed image\(s\) have no label files, e.g. 'a'"):
        _prepare(load_config(None, base), tmp_path / "r2")
    write_lines(ids, ["c"])  # background only: nothing to learn
    with pytest.raises(BudgetsegError, match=r"ids.txt: the 1 labelled images hold no object pixel"):
        _prepare(load_config(None, base), tmp_path / "r3")
    write_lines(ids, ["b"])
    _, split, cost = _prepare(load_config(None, base), tmp_path / "r4")
    assert split.strong == ["b"] and split.unlabeled == ["a", "c", "d"] and cost["n_strong"] == 1


def test_random_strong_refuses_images_without_labels(tmp_path):
    partly_labelled(tmp_path / "voc")
    cfg = load_config(None, [f"data.root={tmp_path / 'voc'}", "n_strong=4"])
    with pytest.raises(BudgetsegError, match="data.strong random drew 2 image"):
        _prepare(cfg, tmp_path / "run")


def test_cost_section_overrides_and_estimated_objects(tmp_path):
    write_voc(tmp_path / "voc", objects=False)
    root = f"data.root={tmp_path / 'voc'}"
    _, _, cost = _prepare(load_config(None, [root, "n_strong=2"]), tmp_path / "r1")
    # semantic-only data: n from connected components (a: the touching persons + the dog, b: the aeroplane)
    assert cost["objects_estimated"] and cost["statistics"]["objects_per_image"] == pytest.approx(1.0)
    assert cost["seconds_per_image"]["full"] > cost["seconds_per_image"]["il"]
    _, _, cost = _prepare(load_config(None, [root, "n_strong=2", "cost.preset=voc"]), tmp_path / "r2")
    assert cost["seconds_per_image"] == {"il": 20.0, "ilc": 22.22, "bb": 38.1, "assisted": 57.7, "full": 239.7}
    assert cost["statistics_from"] == "preset voc" and not cost["objects_estimated"]
    over = ["n_strong=2", "cost.preset=voc", "cost.objects_per_image=1", "cost.mask_s=30"]
    _, _, cost = _prepare(load_config(None, [root, *over]), tmp_path / "r3")
    assert cost["seconds_per_image"]["full"] == pytest.approx(18.5 + 30) and "overriding" in cost["statistics_from"]
    assert cost["action_seconds"]["mask_s"] == 30
    with pytest.raises(BudgetsegError, match="cost.preset"):
        load_config(None, ["cost.preset=coco"])


def test_coco_images_found_where_annotation_tools_put_them(tmp_path):
    for layout in ("images/train", "images", "train"):
        root = tmp_path / layout.replace("/", "_")
        write_coco(root / "annotations" / "instances_train.json", root / layout)
        assert open_dataset("coco", root, "train").image_dir == root / layout
    # Label Studio's COCO export: result.json beside images/, file_name relative to the root
    ls = tmp_path / "ls"
    data = json.loads((tmp_path / "train" / "annotations" / "instances_train.json").read_text())
    for im in data["images"]:
        im["file_name"] = f"images/{im['file_name']}"
    write_coco(ls / "result.json", ls, data)
    ds = open_dataset("coco", ls, "train")
    assert ds.image_dir == ls and ds.load("1").image.shape == (6, 8, 3)
    # data.images overrides
    assert open_dataset("coco", tmp_path / "train", "train", images=tmp_path / "images").image_dir == (
        tmp_path / "images"
    )


def test_coco_auto_pool_takes_the_unlisted_images_beside_the_json(tmp_path):
    write_coco(tmp_path / "annotations" / "instances_train.json", tmp_path / "images")
    write_jpeg(tmp_path / "images" / "new.jpg", 5, 5)
    cfg = load_config(None, ["data.format=coco", f"data.root={tmp_path}", "data.strong=auto", "data.val_split=null"])
    pool, ids, val, _ = open_pool_and_val(cfg)
    assert ids == ["1", "42", "new"] and val is None and not pool.has_labels("new") and pool.has_labels("42")


def test_voc_train_aug_is_a_format(tmp_path):
    write_voc(tmp_path / "VOC2012", {"train": ["a", "b"], "val": ["c"]})
    write_sbd(tmp_path / "dataset", {"train": ["b", "d", "c"], "val": ["e"]})
    ds = open_dataset("voc_train_aug", tmp_path, "train")
    assert ds.ids == ["a", "b", "d", "e"] and ds.image_path("d") == tmp_path / "dataset" / "img" / "d.jpg"
    assert open_dataset("voc_train_aug", tmp_path, "val").ids == ["c"]
    cfg = load_config(None, ["data.format=voc_train_aug", f"data.root={tmp_path}", "n_strong=2"])
    pool, ids, val, val_ids = open_pool_and_val(cfg)
    assert ids == ["a", "b", "d", "e"] and val_ids == ["c"]
    with pytest.raises(BudgetsegError, match="needs one of the folders VOC2012 or voc"):
        open_dataset("voc_train_aug", tmp_path / "dataset")


def test_config_paths_are_stored_resolved_and_differences_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, ["data.root=data/x", "data.strong=ids.txt", "data.unlabeled=~/photos"])
    assert cfg.data.root == str(tmp_path / "data" / "x") and cfg.data.strong == str(tmp_path / "ids.txt")
    assert cfg.data.unlabeled == str(Path("~/photos").expanduser()) and cfg.model.encoder_weights == "imagenet"
    other = load_config(None, ["data.root=data/x", "pseudo.tta=true", "n_strong=5"])
    assert config_diff(to_dict(cfg), to_dict(other)) == ["n_strong", "data.strong", "data.unlabeled", "pseudo.tta"]


def test_resuming_with_another_config_names_the_keys(tmp_path):
    write_voc(tmp_path / "voc")
    root = f"data.root={tmp_path / 'voc'}"
    cfg = load_config(None, [root, "n_strong=2"])
    pool, ids, _, _ = open_pool_and_val(cfg)
    _prepare(cfg, tmp_path / "run")
    other = load_config(None, [root, "n_strong=1", "segmenter.lr=0.5"])
    log = Logger(tmp_path / "run" / "log.txt", True)
    with pytest.raises(BudgetsegError, match="differs from this run's configuration in n_strong, segmenter.lr"):
        prepare(other, tmp_path / "run", pool, ids, True, True, SINGLE, log)
    strong = (tmp_path / "run" / "split" / "strong.txt").read_text().split()
    assert prepare(cfg, tmp_path / "run", pool, ids, True, True, SINGLE, log)[0].strong == strong


def test_cli_knows_every_reader_format(tmp_path, capsys):
    from budgetseg.cli import FORMATS as CLI_FORMATS
    from budgetseg.cli import main
    from budgetseg.data.readers import FORMATS

    assert CLI_FORMATS == FORMATS
    write_voc(tmp_path / "VOC2012", {"train": ["a", "b"], "val": ["c"]})
    write_sbd(tmp_path / "dataset", {"train": ["b", "d", "c"], "val": ["e"]})
    assert main(["stats", "--format", "voc_train_aug", "--root", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 4


def test_a_missing_image_named_by_a_relative_path_says_where_it_was_looked_for(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for read in (read_image, image_size):
        with pytest.raises(BudgetsegError, match=rf"nope.png: image file is missing \(looked in {tmp_path}\)"):
            read("nope.png")
