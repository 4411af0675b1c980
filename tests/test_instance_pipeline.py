"""End-to-end instance runs (RSIS) on a COCO-format dataset written here (not fashion-scenes)."""

import dataclasses
import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from budgetseg.config import load_config
from budgetseg.data.coco import mask_to_rle
from budgetseg.data.readers import open_dataset
from budgetseg.errors import BudgetsegError
from budgetseg.experiments.report import report
from budgetseg.pipeline import run

pytestmark = pytest.mark.slow


def write_shapes_coco(root, split: str, n: int, seed: int, size: int = 64) -> None:
    """Squares (category 5, polygons) and discs (category 9, RLE) on noise: root/<split>/*.jpg and
    root/annotations/instances_<split>.json."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images, anns = [], []
    for i in range(n):
        img = rng.integers(0, 80, (size, size, 3)).astype(np.uint8)
        taken = np.zeros((size, size), bool)
        for _ in range(rng.integers(1, 4)):
            r = int(rng.integers(6, 12))
            cy, cx = (int(v) for v in rng.integers(r, size - r, 2))
            square = rng.random() < 0.5
            m = (np.abs(yy - cy) < r) & (np.abs(xx - cx) < r) if square else (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
            if (m & taken).any():
                continue
            taken |= m
            img[m] = (220, 60, 60) if square else (60, 200, 220)
            seg = (
                [
                    [
                        cx - r + 0.5,
                        cy - r + 0.5,
                        cx + r - 0.5,
                        cy - r + 0.5,
                        cx + r - 0.5,
                        cy + r - 0.5,
                        cx - r + 0.5,
                        cy + r - 0.5,
                    ]
                ]
                if square
                else mask_to_rle(m)
            )
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": 5 if square else 9,
                    "segmentation": seg,
                    "area": int(m.sum()),
                    "bbox": [cx - r, cy - r, 2 * r, 2 * r],
                    "iscrowd": 0,
                }
            )
        (root / split).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / split / f"{i:03d}.jpg", quality=95)
        images.append({"id": i + 1, "file_name": f"{i:03d}.jpg", "height": size, "width": size})
    cats = [{"id": 9, "name": "disc"}, {"id": 5, "name": "square"}]
    (root / "annotations").mkdir(exist_ok=True)
    (root / "annotations" / f"instances_{split}.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats})
    )


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    write_shapes_coco(root, "train", 24, seed=0)
    write_shapes_coco(root, "val", 8, seed=1)
    return root


TINY = [
    "data.format=coco",
    "data.size=64",
    "n_strong=8",
    "model.steps=4",
    "annotator.iterations=8",
    "annotator.batch_size=4",
    "annotator.epoch_iters=4",
    "segmenter.iterations=8",
    "segmenter.batch_size=4",
    "segmenter.epoch_iters=4",
]


def tiny(shapes, *more: str):
    return load_config("configs/fashion_instance.yaml", [*TINY, f"data.root={shapes}", *more])


def test_instance_run_on_a_coco_dataset(shapes, tmp_path):
    cfg = tiny(shapes)
    out = tmp_path / "run"
    res = run(cfg, out)
    assert res["task"] == "instance" and (res["n_strong"], res["n_pseudo"]) == (8, 16)
    for net in ("annotation_net", "segmentation_net", "pseudo_labels"):
        assert {"ap", "ap50", "ap75", "ap_r", "ap_r_mean", "sbd", "fbd", "dic", "abs_dic"} <= set(res[net])
        assert 0.0 <= res[net]["ap50"] <= 1.0 and 0.0 <= res[net]["sbd"] <= 1.0 and res[net]["abs_dic"] >= 0
    assert res["annotation_net"]["gt_instances"] > 8  # the val ground truth was read
    coco = COCO(str(out / "pseudo" / "pseudo_labels.json"))
    assert sorted(c["name"] for c in coco.loadCats(coco.getCatIds())) == ["disc", "square"]
    assert len(coco.getImgIds()) == 16
    assert len(list((out / "pseudo" / "pred").glob("*.json"))) == 16
    rep = report([out], tmp_path / "report")
    assert "AP50" in rep["table"] and (tmp_path / "report" / "grid.png").is_file()
    assert "g_phi SBD" in rep["table"] and rep["rows"][0]["g_phi_sbd"] == res["segmentation_net"]["sbd"]


def test_wrsis_run_pays_for_il_c_and_its_pseudo_labels_carry_the_known_classes(shapes, tmp_path):
    out = tmp_path / "wrsis"
    res = run(tiny(shapes, "model.class_inputs=true"), out)
    cost = json.loads((out / "cost.json").read_text())
    spi = cost["seconds_per_image"]
    assert (res["n_strong"], res["n_weak"]) == (8, 16)
    assert res["budget_seconds"] == pytest.approx(8 * spi["full"] + 16 * spi["ilc"], rel=1e-6)
    ds = open_dataset("coco", shapes, "train")
    pseudo = json.loads((out / "pseudo" / "pseudo_labels.json").read_text())
    names = {c["id"]: c["name"] for c in pseudo["categories"]}
    files = {im["id"]: im["sample_id"] for im in pseudo["images"]}  # file_name is the image's, 000.jpg
    assert {im["file_name"] for im in pseudo["images"]} == {ds.image_path(i).name for i in files.values()}
    got = {f: Counter() for f in files.values()}
    for a in pseudo["annotations"]:
        got[files[a["image_id"]]][names[a["category_id"]]] += 1
    for image_id, counts in got.items():  # at most the IL+C counts, of the known classes
        known = Counter(ds.class_names[c] for c in ds.load(image_id, with_image=False).instance_classes)
        assert not counts - known
    assert res["annotation_net"]["predictions"] <= res["annotation_net"]["gt_instances"]
    log = (out / "log.txt").read_text()
    assert "IL+C for them" in log


def test_wrsis_weak_label_file_errors_leave_no_run_folder(shapes, tmp_path):
    weak = tmp_path / "weak.csv"
    first = open_dataset("coco", shapes, "train").ids[0]
    weak.write_text(f"image_id,class,count\n{first},disc,1\n")
    out = tmp_path / "run"
    with pytest.raises(BudgetsegError, match=r"weak.csv: no IL\+C label for image\(s\)"):
        run(tiny(shapes, "model.class_inputs=true", f"data.weak_labels={weak}"), out)
    assert not out.exists()
    weak.write_text("image_id,class,count\nnosuch,disc,1\n")
    with pytest.raises(BudgetsegError, match="weak.csv: names no image of the dataset: 'nosuch'"):
        run(tiny(shapes, "model.class_inputs=true", f"data.weak_labels={weak}"), out)
    assert not out.exists()
    weak.write_text("image_id,class,count\n000,hat,1\n")
    with pytest.raises(BudgetsegError, match="weak.csv: line 2: unknown class 'hat'"):
        run(tiny(shapes, "model.class_inputs=true", f"data.weak_labels={weak}"), out)
    assert not out.exists()


def test_weak_label_file_drives_wrsis_and_segmenter_starts_from_it(shapes, tmp_path):
    """Every unlabeled image claims one disc: the pseudo-labels hold discs only, one per image at most. The file
    counts the 4 images past data.limit_pool too, as a dataset's own counts file does: rows the run does not read."""
    ids = open_dataset("coco", shapes, "train").ids
    weak = tmp_path / "weak.json"
    weak.write_text(json.dumps({i: {"disc": 1} for i in ids}))
    out = tmp_path / "run"
    cfg = tiny(shapes, "model.class_inputs=true", f"data.weak_labels={weak}", "segmenter.init=annotator")
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, limit_pool=20))
    run(cfg, out)
    pseudo = json.loads((out / "pseudo" / "pseudo_labels.json").read_text())
    disc = next(c["id"] for c in pseudo["categories"] if c["name"] == "disc")
    assert {a["category_id"] for a in pseudo["annotations"]} <= {disc}
    assert len(pseudo["annotations"]) <= 12
    log = (out / "log.txt").read_text()
    assert "segmenter: initialised from" in log and "left as built" not in log  # every tensor carried over


def test_compare_solves_budgets_and_reports_both_strategies(shapes, tmp_path):
    from budgetseg.experiments.compare import compare, solve

    spi = {"full": 100.0, "ilc": 10.0}
    assert solve(1000.0, 24, spi, "rsis") == 10
    assert solve(1000.0, 24, spi, "wrsis") == 8  # 8 * 100 + 16 * 10 = 960 <= 1000 < 9 * 100 + 15 * 10
    assert solve(200.0, 24, spi, "wrsis") is None  # the IL+C of the pool alone costs 240 s
    assert solve(50.0, 24, spi, "rsis") is None
    cfg = tiny(shapes)
    out = tmp_path / "cmp"
    # the pool's 24 images: Full 135.6 s, IL+C 4.0 s each (the pool's IL+C alone: 95 s)
    rows = compare(cfg, ["1000s", "60s"], out, ("rsis", "wrsis"))
    by = {(r["budget"], r["strategy"]): r for r in rows}
    assert set(by) == {("1000s", "rsis"), ("1000s", "wrsis"), ("60s", "rsis"), ("60s", "wrsis")}
    assert (by[("1000s", "rsis")]["n_strong"], by[("1000s", "wrsis")]["n_strong"]) == (7, 6)
    assert (by[("1000s", "rsis")]["n_weak"], by[("1000s", "wrsis")]["n_weak"]) == (0, 18)
    assert all("skipped" in by[("60s", s)] and by[("60s", s)]["n_strong"] is None for s in ("rsis", "wrsis"))
    for r in rows:
        if "skipped" not in r:
            assert r["spent_days"] <= r["budget_days"] + 1e-9 and 0 <= r["g_phi_ap50"] <= 1
            assert 0 <= r["g_phi_sbd"] <= 1 and r["f_theta_abs_dic"] >= 0
    md = (out / "compare.md").read_text()
    assert "W-RSIS" in md and "needs at least" in md and (out / "compare_ap50.png").stat().st_size > 10_000


def test_compare_and_wrsis_cli_errors_are_one_line(shapes, tmp_path, capsys):
    from budgetseg.cli import main

    base = ["compare", "configs/fashion_instance.yaml", "--set", "data.format=coco", "--set", f"data.root={shapes}"]
    out = tmp_path / "cmp"
    assert main([*base, "--out", str(out), "--budgets", "0.2d,lots"]) == 2
    err = capsys.readouterr().err
    assert "lots" in err and err.count("\n") == 1 and not out.exists()
    assert main([*base, "--out", str(out), "--budgets", " , "]) == 2
    assert "--budgets" in capsys.readouterr().err
    assert main([*base, "--out", str(out), "--budgets", "1d", "--strategies", "wrsis", "--set", "task=semantic"]) == 2
    assert "not one of the semantic task's" in capsys.readouterr().err and not out.exists()
    assert main([*base, "--out", str(out), "--budgets", "1d", "--mix-share", "1.5"]) == 2
    assert "--mix-share" in capsys.readouterr().err and not out.exists()
    run_args = [
        "run",
        "configs/fashion_semantic.yaml",
        "--out",
        str(tmp_path / "r"),
        "--set",
        "model.class_inputs=true",
    ]
    assert main(run_args) == 2
    assert "needs task: instance" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_rsis_learns_from_simulated_boxes_alone(shapes, tmp_path):
    from budgetseg.data.pool import BoxMasked, SimulatedBoxes
    from budgetseg.data.readers import open_dataset
    from budgetseg.splits import read_split

    cfg = tiny(shapes, "data.labels.full=0", "data.labels.boxes=8")
    out = tmp_path / "boxes"
    res = run(cfg, out)
    split = read_split(out / "split")
    assert split.boxes == split.strong and len(split.boxes) == 8 and res["n_strong"] == 8
    assert 0.0 <= res["segmentation_net"]["ap50"] <= 1.0
    cost = json.loads((out / "cost.json").read_text())
    assert cost["labels"]["full"]["images"] == 0 and cost["labels"]["boxes"]["images"] == 8
    pool = open_dataset("coco", shapes, "train")
    boxed = BoxMasked(SimulatedBoxes(pool, split.boxes), out / "box_masks")
    for i in split.boxes[:3]:  # RSIS trained on one estimated mask per object (the discs and squares of the image)
        truth, est = pool.load(i), boxed.load(i)
        assert len(est.instance_masks) == len(truth.instance_masks) and len(est.boxes) == 0
        ious = [(a & b).sum() / (a | b).sum() for a, b in zip(est.instance_masks, truth.instance_masks, strict=True)]
        assert min(ious) > 0.5


def test_an_image_with_more_objects_than_a_target_holds_is_refused_before_training(tmp_path):
    """255 objects in one pool image (the uint8 target holds 254): one line naming the image, no run folder."""
    write_shapes_coco(tmp_path, "train", 6, seed=0)
    write_shapes_coco(tmp_path, "val", 2, seed=1)
    path = tmp_path / "annotations" / "instances_train.json"
    data = json.loads(path.read_text())
    first = data["images"][0]["id"]
    many = [a for a in data["annotations"] if a["image_id"] == first]
    extra = 255 - len(many)
    for k in range(extra):  # 1-pixel squares along the image's first rows
        x, y = k % 64, k // 64
        seg = [[x, y, x + 1, y, x + 1, y + 1, x, y + 1]]
        ann = {"id": 10_000 + k, "image_id": first, "category_id": 5, "segmentation": seg, "area": 1}
        data["annotations"].append(ann | {"bbox": [x, y, 1, 1]})
    path.write_text(json.dumps(data))
    with pytest.raises(BudgetsegError, match=r"255 objects in one image; the instance task's targets hold 254"):
        run(tiny(tmp_path, "n_strong=6"), tmp_path / "run")
    assert not (tmp_path / "run").exists()
