"""The practitioner's loop end to end, as docs/practitioners-loop.md tells it: a folder of 60 photos of mixed
sizes -> `select` 10 to label -> those 10 labelled -> `run` with data.strong auto and the photo folder as the
unlabeled pool -> `export` to CVAT, COCO and Label Studio -> each export read back as strong labels -> `predict` on
3 new photos of other sizes -> `evaluate` the run on another labelled set. Semantic and instance."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import fashion_scenes
from PIL import Image

from budgetseg.cli import main, shipped_configs
from budgetseg.config import load_config
from budgetseg.data.readers import open_dataset
from budgetseg.data.sample import encode_label_png
from budgetseg.plan import given_strong, open_pool_and_val
from budgetseg.tasks import make_task

pytestmark = pytest.mark.slow

TINY = {
    "data": {"size": 64},
    "model": {"steps": 4},
    "annotator": {"iterations": 4, "batch_size": 4, "epoch_iters": 2},
    "segmenter": {"iterations": 4, "batch_size": 4, "epoch_iters": 2},
    "pseudo": {"batch_size": 8},
}
SIZES = [(64, 64), (80, 56), (48, 72)]  # (width, height) of the photos, in turn


def resized(path: Path, size: tuple[int, int], nearest: bool) -> Image.Image:
    im = Image.open(path)
    return im if im.size == size else im.resize(size, Image.NEAREST if nearest else Image.BILINEAR)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """root/photos: 60 photos (every fourth a PNG) of three sizes; root/truth: their VOC labels at those sizes;
    root/fs: the fashion-scenes build they come from (its val split is a labelled set to evaluate on)."""
    root = tmp_path_factory.mktemp("own")
    fs = shutil.move(fashion_scenes(tmp_path_factory, train=60, val=8, size=64, seed=3), root / "fs")
    ds = open_dataset("voc", fs, "train")
    for k, i in enumerate(ds.ids):
        size = SIZES[k % 3]
        ext = ".png" if k % 4 == 0 else ".jpg"
        (root / "photos").mkdir(exist_ok=True)
        resized(ds.image_path(i), size, False).convert("RGB").save(root / "photos" / f"{i}{ext}")
        for sub in ("SegmentationClass", "SegmentationObject"):
            label = np.asarray(resized(fs / sub / f"{i}.png", size, True))
            (root / "truth" / sub).mkdir(parents=True, exist_ok=True)
            with open(root / "truth" / sub / f"{i}.png", "wb") as f:
                encode_label_png(label, f)
    return root


def label_them(root: Path, ids: list[str], copied: Path, out: Path) -> None:
    """What the annotator hands back: the selected photos with their labels, in the VOC layout (no split files)."""
    for i in ids:
        src = next(copied.glob(f"{i}.*"))
        (out / "JPEGImages").mkdir(parents=True, exist_ok=True)
        shutil.copy(src, out / "JPEGImages" / src.name)
        for sub in ("SegmentationClass", "SegmentationObject"):
            (out / sub).mkdir(exist_ok=True)
            shutil.copy(root / "truth" / sub / f"{i}.png", out / sub / f"{i}.png")
    shutil.copy(root / "fs" / "classes.txt", out / "classes.txt")


def submit_unchanged(tasks_json: Path) -> None:
    """What Label Studio exports after an annotator submits each pre-annotated task as it is."""
    tasks = json.loads(tasks_json.read_text())
    for task in tasks:
        if not task.get("annotations"):
            task["annotations"] = [{"result": task["predictions"][0]["result"], "was_cancelled": False}]
    tasks_json.write_text(json.dumps(tasks))


def cli_json(capsys, *args: str) -> dict:
    assert main([*args, "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


READ_BACK = {  # export format -> (reader format, train split)
    "cvat": ("voc", "default"),
    "coco": ("coco", "default"),
    "labelstudio": ("labelstudio", None),
}


@pytest.mark.parametrize("task", ["semantic", "instance"])
def test_own_images_story(photos, tmp_path, capsys, monkeypatch, task):
    # 1. which 10 of the 60 photos to label
    ids_file, copied = tmp_path / "to_label.txt", tmp_path / "to_label"
    sel = cli_json(
        capsys, "select", "--images", str(photos / "photos"), "--n", "10", "--out", str(ids_file), "--copy", str(copied)
    )
    ids = ids_file.read_text().split()
    assert sel["strategy"] == "random" and len(ids) == 10 and len(list(copied.iterdir())) == 10

    # 2. labelled in a tool, then the shipped template for one's own photos, as it is but for a short schedule: the
    # labelled 10 (labelled/, their photos in to_label/) plus the whole photo folder (photos/) as the unlabeled pool
    label_them(photos, ids, copied, tmp_path / "labelled")
    (tmp_path / "photos").symlink_to(photos / "photos")
    monkeypatch.chdir(tmp_path)
    assert main(["config", "init", task]) == 0
    assert capsys.readouterr().out == shipped_configs()[task].read_text()  # `config init semantic > my.yaml`
    assert main(["config", "init", task, "--out", "my.yaml"]) == 0 and "wrote my.yaml" in capsys.readouterr().out
    assert main(["config", "init", task, "--out", "my.yaml"]) == 2  # never overwrites
    tiny = [f"{sec}.{k}={v}" for sec, kv in TINY.items() for k, v in kv.items()]
    run = tmp_path / "run"
    res = cli_json(capsys, "run", "my.yaml", "--out", "run", *[a for t in tiny for a in ("--set", t)])
    assert res["n_strong"] == 10 and res["n_pseudo"] == 50 and res["annotation_net"] is None
    metric = "miou" if task == "semantic" else "ap50"
    assert res["pseudo_labels"]["scored_images"] == 0 and res["pseudo_labels"][metric] is None
    cost = json.loads((run / "cost.json").read_text())
    assert cost["n_strong"] == 10 and cost["statistics_from"] == "measured on the 10 strong images' labels"
    unlabeled = (run / "split" / "unlabeled.txt").read_text().split()
    assert sorted(unlabeled) == sorted(set(p.stem for p in (photos / "photos").iterdir()) - set(ids))
    pool, _, _, _ = open_pool_and_val(load_config(run / "config.yaml"))
    if task == "semantic":  # pseudo-labels at each photo's own size
        for i in unlabeled[:6]:
            assert Image.open(run / "pseudo" / "labels" / f"{i}.png").size == Image.open(pool.image_path(i)).size
    else:  # instance pseudo-labels name their images by file name, extension included
        images = json.loads((run / "pseudo" / "pseudo_labels.json").read_text())["images"]
        assert {im["file_name"] for im in images} == {pool.image_path(i).name for i in unlabeled}

    # 3. every export, read back as strong labels, gives the masks g_phi trained on
    t = make_task(task, pool.class_names, load_config(run / "config.yaml").model)
    want = {i: t.target(pool.load(i)) for i in ids}
    want |= {i: t.pseudo_labels(run / "pseudo").target(i, pool.load(i, with_image=False).size) for i in unlabeled}
    for fmt, (reader, split) in READ_BACK.items():
        out = tmp_path / f"export-{fmt}"
        ex = cli_json(capsys, "export", str(run), "--to", fmt, "--out", str(out))
        assert ex["strong_images"] == 10 and ex["pseudo_images"] == 50
        over = [f"task={task}", f"data.format={reader}", f"data.root={out}", "data.strong=auto", "data.val_split=null"]
        cfg = load_config(None, over + ([f"data.train_split={split}"] if split else []))
        back, back_ids, _, _ = open_pool_and_val(cfg)
        if fmt == "labelstudio":  # pseudo-labels are predictions: labels once an annotator submits them
            assert sorted(given_strong(cfg, back, back_ids)) == sorted(ids)
            submit_unchanged(out / "tasks.json")
            back, back_ids, _, _ = open_pool_and_val(cfg)
        assert len(given_strong(cfg, back, back_ids)) == 60  # every image now comes back labelled
        coco = reader == "coco"  # COCO's sample ids are its image ids; the export keeps ours beside them
        sample_id = {k: back.base.images[k]["sample_id"] if coco else k for k in back_ids}
        for k in back_ids:
            np.testing.assert_array_equal(t.target(back.load(k)), want[sample_id[k]], err_msg=f"{fmt} {k}")

    # 4. the trained g_phi on new photos of other sizes
    new = tmp_path / "new"
    new.mkdir()
    fs_val = open_dataset("voc", photos / "fs", "val")
    for n, size in enumerate([(50, 70), (90, 40), (33, 77)]):
        resized(fs_val.image_path(fs_val.ids[n]), size, False).save(new / f"new{n}.jpg")
    pred = cli_json(capsys, "predict", str(run), str(new), "--out", str(tmp_path / "pred"))
    assert pred["images"] == 3
    if task == "semantic":
        for n, size in enumerate([(50, 70), (90, 40), (33, 77)]):
            assert Image.open(tmp_path / "pred" / f"new{n}.png").size == size
            assert (tmp_path / "pred" / "overlay" / f"new{n}.jpg").is_file()
    else:
        results = json.loads((tmp_path / "pred" / "predictions.json").read_text())
        assert {r["file_name"] for r in results} <= {"new0.jpg", "new1.jpg", "new2.jpg"}
        assert len(list((tmp_path / "pred" / "overlay").iterdir())) == 3

    # 5. the run scored on a labelled set it never saw, without retraining
    ev = cli_json(capsys, "evaluate", str(run), "--val-root", str(photos / "fs"), "--val-split", "val")
    assert ev["val"]["images"] == 8 and 0.0 <= ev["segmenter"][metric] <= 1.0 and ev["annotator"] is not None
    if task == "instance":  # the CVPPP figures beside AP
        assert 0.0 <= ev["segmenter"]["sbd"] <= 1.0 and ev["segmenter"]["abs_dic"] >= 0
    assert (run / "evaluations" / "voc-fs-val" / "evaluation.json").is_file()
    tta = ["evaluate", str(run), "--val-root", str(photos / "fs"), "--val-split", "val", "--tta", "--json"]
    if task == "semantic":  # with test-time augmentation: scored apart from the plain evaluation
        ev_tta = cli_json(capsys, *tta[:-1])
        assert ev_tta["val"]["tta"] == {"mirror": True, "scales": [0.75, 1.0, 1.5]} and ev["val"]["tta"] is None
        assert 0.0 <= ev_tta["segmenter"][metric] <= 1.0
        saved = json.loads((run / "evaluations" / "voc-fs-val-tta-0.75-1-1.5" / "evaluation.json").read_text())
        assert saved == ev_tta
    else:
        assert main(tta) == 2 and "applies to semantic networks" in capsys.readouterr().err
        assert not (run / "evaluations" / "voc-fs-val-tta-0.75-1-1.5").exists()
