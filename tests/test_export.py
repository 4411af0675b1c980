"""budgetseg export: hand-made run folders exported to CVAT, COCO and Label Studio and read back with the readers.

The labels an export must carry are what training sees, taken from the task code itself: SemanticTask.target /
the pseudo/labels PNGs, and InstanceTask.target / PseudoLabels.target (visible instances, 255 = ignore).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fixtures_data import Labels, box, write_jpeg, write_lines, write_png, write_voc
from PIL import Image
from pycocotools import mask as mask_utils

from budgetseg.cli import main
from budgetseg.config import DataConfig, RunConfig, save_config
from budgetseg.data.coco import COCODataset, mask_to_rle
from budgetseg.data.labelmap import read_color_label_png, read_labelmap
from budgetseg.data.labelstudio import LabelStudioDataset
from budgetseg.data.readers import LabelOptions, open_dataset
from budgetseg.data.sample import IGNORE
from budgetseg.data.voc import VOCDataset
from budgetseg.errors import BudgetsegError
from budgetseg.io import write_json
from budgetseg.loop.export import export_run
from budgetseg.splits import Split, write_split
from budgetseg.tasks import make_task

NAMES = ["background", "cat", "dog", "car"]
STRONG, PSEUDO = ["s1", "s2"], ["p1", "p2"]
SIZES = {"s1": (6, 8), "s2": (5, 7), "p1": (7, 5), "p2": (4, 9)}  # (H, W): all different, H != W


def strong_labels() -> dict:
    """s1: a cat (one pixel of it ignored) and a dog, an ignore border row; s2: a car, and object 2 on
    background only (no instance)."""
    sem, obj = np.zeros(SIZES["s1"], np.uint8), np.zeros(SIZES["s1"], np.uint8)
    sem[0:3, 0:4], obj[0:3, 0:4] = 1, 1
    sem[1, 1] = IGNORE
    sem[3:6, 5:8], obj[3:6, 5:8] = 2, 2
    sem[3, 0:4] = obj[3, 0:4] = IGNORE
    s1 = (Labels(sem, np.stack([obj == 1, obj == 2]), np.array([1, 2])), obj)
    sem, obj = np.zeros(SIZES["s2"], np.uint8), np.zeros(SIZES["s2"], np.uint8)
    sem[1:4, 1:6], obj[1:4, 1:6] = 3, 1
    obj[4, 0:2] = 2
    return {"s1": s1, "s2": (Labels(sem, (obj == 1)[None], np.array([3])), obj)}


def pseudo_semantic(pdir: Path) -> None:
    """p1: cat in two components, a dog row, a low-confidence row (255); p2: background and an ignored column.
    p1 is the less confident (confidences 100-199 against 150-255): it has the more expected errors."""
    lab = np.zeros(SIZES["p1"], np.uint8)
    lab[0:2, 0:2] = 1
    lab[5:7, 3:5] = 1
    lab[3, :] = 2
    lab[2, :] = IGNORE
    rng = np.random.default_rng(0)
    p2 = np.pad(np.zeros((4, 8), np.uint8), ((0, 0), (0, 1)), constant_values=255)
    for i, arr, low in (("p1", lab, 100), ("p2", p2, 150)):
        write_png(pdir / "labels" / f"{i}.png", arr)
        conf = rng.integers(low, low + 100 if i == "p1" else 256, arr.shape).astype(np.uint8)
        pdir.joinpath("conf").mkdir(parents=True, exist_ok=True)
        Image.fromarray(conf, mode="L").save(pdir / "conf" / f"{i}.png")


def pseudo_instances(pdir: Path) -> None:
    """p1: a dog (0.9) over a cat (0.7) where they overlap, an unsure car (0.2, crowd) partly under the cat;
    p2: nothing. p1's entry is written as finalize_instances writes it now, p2's as before sample_id existed."""
    h, w = SIZES["p1"]
    anns = [
        (box(2, 6, 1, 5, h, w), 1, 0.7, 0),
        (box(0, 4, 0, 3, h, w), 2, 0.9, 0),
        (box(4, 7, 0, 3, h, w), 3, 0.2, 1),
    ]
    data = {
        "categories": [{"id": i, "name": n} for i, n in enumerate(NAMES) if i],
        "images": [
            {"id": 1, "file_name": "p1.jpg", "sample_id": "p1", "height": h, "width": w},
            {"id": 2, "file_name": "p2", "height": SIZES["p2"][0], "width": SIZES["p2"][1]},
        ],
        "annotations": [
            {"id": k, "image_id": 1, "category_id": c, "segmentation": mask_to_rle(m), "score": s, "iscrowd": crowd}
            for k, (m, c, s, crowd) in enumerate(anns, start=1)
        ],
    }
    write_json(pdir / "pseudo_labels.json", data)


def make_run(tmp: Path, task: str) -> Path:
    """A run folder as the pipeline leaves it after pseudo-labelling, over a VOC pool whose unlabeled images
    have no label files."""
    voc = tmp / "voc"
    write_voc(voc, {"train": STRONG + PSEUDO, "val": ["s1"]}, labels=strong_labels())
    write_jpeg(voc / "JPEGImages" / "p1.jpg", *SIZES["p1"])
    Image.fromarray(np.full((*SIZES["p2"], 3), 90, np.uint8)).save(voc / "JPEGImages" / "p2.png")  # not a JPEG
    write_lines(voc / "classes.txt", NAMES)
    run = tmp / f"run-{task}"
    save_config(run / "config.yaml", RunConfig(task=task, data=DataConfig(format="voc", root=str(voc))))
    write_split(run / "split", Split(STRONG, PSEUDO))
    (pseudo_semantic if task == "semantic" else pseudo_instances)(run / "pseudo")
    write_json(run / "pseudo" / "summary.json", {"images": len(PSEUDO)})
    return run


def truth(run: Path, task: str) -> dict[str, tuple[np.ndarray, list[tuple[int, bytes]]]]:
    """id -> (semantic target uint8 (H, W), sorted [(class, visible mask bytes)]) as training sees them."""
    pool = VOCDataset(run.parent / "voc", "train")
    t = make_task(task, NAMES)
    out = {}
    for i in STRONG + PSEUDO:
        if task == "semantic":
            sem = t.target(pool.load(i)) if i in STRONG else t.pseudo_labels(run / "pseudo").target(i, SIZES[i])
            out[i] = (sem, [])
            continue
        target = t.target(pool.load(i)) if i in STRONG else t.pseudo_labels(run / "pseudo").target(i, SIZES[i])
        objects = target[..., 1]
        ks = [k for k in np.unique(objects) if k not in (0, IGNORE)]
        out[i] = (
            target[..., 0],
            instances([objects == k for k in ks], [target[..., 0][objects == k][0] for k in ks]),
        )
    return out


def instances(masks, classes) -> list[tuple[int, bytes]]:
    return sorted((int(c), np.asarray(m, bool).tobytes()) for m, c in zip(masks, classes, strict=True))


def check_sample(sample, want: tuple, task: str) -> None:
    sem, inst = want
    np.testing.assert_array_equal(sample.semantic, sem)
    if task == "instance":
        assert instances(sample.instance_masks, sample.instance_classes) == inst


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("runs")
    return {task: make_run(tmp / task, task) for task in ("semantic", "instance")}


@pytest.mark.parametrize("task", ["semantic", "instance"])
def test_truth_is_not_trivial(runs, task):
    """The hand-made runs hold what the exports must keep: ignored pixels, and for instances an overlap and an
    unsure instance partly covered by a kept one."""
    want = truth(runs[task], task)
    assert all((want[i][0] == IGNORE).any() for i in ("s1", "p1"))
    if task == "instance":
        assert [c for c, _ in want["p1"][1]] == [1, 2] and len(want["s1"][1]) == 2 and want["p2"][1] == []


@pytest.mark.parametrize("task", ["semantic", "instance"])
def test_cvat_round_trip(runs, task, tmp_path):
    run, out = runs[task], tmp_path / "cvat"
    res = export_run(run, "cvat", out)
    assert res["strong_images"] == 2 and res["pseudo_images"] == 2 and (out / "export.json").is_file()
    lines = (out / "labelmap.txt").read_text().splitlines()
    assert lines[0] == "# label:color_rgb:parts:actions"
    assert lines[1:3] == ["background:0,0,0::", "cat:128,0,0::"] and lines[-1] == "ignore:224,224,192::"
    assert [p.name for p in (out / "ImageSets" / "Segmentation").iterdir()] == ["default.txt"]  # one subset
    assert (out / "ImageSets" / "Segmentation" / "default.txt").read_text().split() == STRONG + PSEUDO
    assert (out / "strong.txt").read_text().split() == STRONG and (out / "pseudo.txt").read_text().split() == PSEUDO
    assert sorted(p.name for p in (out / "JPEGImages").iterdir()) == ["p1.jpg", "p2.png", "s1.jpg", "s2.jpg"]
    assert (out / "SegmentationObject").is_dir() == (task == "instance")
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["strong"] == STRONG and manifest["pseudo"] == PSEUDO and manifest["task"] == task
    assert manifest["ignore_label"] == {"name": "ignore", "index": 255, "color": [224, 224, 192]}

    names, colours = read_labelmap(out / "labelmap.txt")
    assert names == NAMES and colours[IGNORE] == (224, 224, 192)
    ds = VOCDataset(out, "default", class_names=names)
    want = truth(run, task)
    for i in STRONG + PSEUDO:
        check_sample(ds.load(i), want[i], task)
        png = out / "SegmentationClass" / f"{i}.png"
        with Image.open(png) as im:  # an index PNG whose palette is the label map's colours
            assert im.mode == "P" and tuple(im.getpalette()[3:6]) == colours[1]
            rgb = np.asarray(im.convert("RGB"))
        np.testing.assert_array_equal(read_color_label_png(png, colours), want[i][0])
        Image.fromarray(rgb).save(tmp_path / "rgb.png")  # as CVAT exports masks: RGB colours
        np.testing.assert_array_equal(read_color_label_png(tmp_path / "rgb.png", colours), want[i][0])


@pytest.mark.parametrize("task", ["semantic", "instance"])
def test_coco_round_trip(runs, task, tmp_path):
    run, out = runs[task], tmp_path / "coco"
    export_run(run, "coco", out)
    ds = COCODataset(out / "annotations" / "instances_default.json", out / "images")
    assert ds.class_names == NAMES  # the crowd regions' `ignore` category (last) is no class: it reads as 255
    assert open_dataset("coco", out, "default").ids == ds.ids  # found as data.format coco, train_split default
    by_sample = {im["sample_id"]: k for k, im in ds.images.items()}
    assert list(by_sample) == STRONG + PSEUDO
    assert [ds.images[by_sample[i]]["source"] for i in by_sample] == ["strong"] * 2 + ["pseudo"] * 2
    assert [ds.images[by_sample[i]]["file_name"] for i in ("s1", "p2")] == ["s1.jpg", "p2.png"]  # extension kept
    want = truth(run, task)
    for i in STRONG + PSEUDO:
        sample = ds.load(by_sample[i])
        check_sample(sample, want[i], task)
        anns = ds.annotations[by_sample[i]]
        assert all(("score" in a) == (i in PSEUDO) for a in anns)  # scores mark pseudo-labels
        for a in anns:
            m = mask_utils.decode(a["segmentation"]).astype(bool)
            assert a["area"] == m.sum() and a["bbox"] == [float(v) for v in mask_utils.toBbox(a["segmentation"])]
    p1 = ds.annotations[by_sample["p1"]]
    if task == "semantic":  # one annotation per component: the cat's two, the dog's one, one crowd region
        assert sorted((a["category_id"], a["iscrowd"]) for a in p1) == [(1, 0), (1, 0), (2, 0), (4, 1)]
    else:  # the unsure car stays a crowd region of its class
        assert sorted((a["category_id"], a["iscrowd"]) for a in p1) == [(1, 0), (2, 0), (3, 1)]


def accept_predictions(tasks_json: Path, dest: Path) -> Path:
    """What an annotator who accepts every prediction in Label Studio leaves: predictions become annotations."""
    tasks = json.loads(tasks_json.read_text())
    for t in tasks:
        for p in t.pop("predictions", []):
            t["annotations"] = [{"id": 1, "result": p["result"], "was_cancelled": False}]
    dest.write_text(json.dumps(tasks))
    return dest


@pytest.mark.parametrize("task", ["semantic", "instance"])
def test_labelstudio_round_trip(runs, task, tmp_path):
    run, out = runs[task], tmp_path / "ls"
    export_run(run, "labelstudio", out)
    tasks = json.loads((out / "tasks.json").read_text())
    assert [t["data"]["sample_id"] for t in tasks] == STRONG + PSEUDO
    assert tasks[0]["data"]["image"] == "/data/local-files/?d=images/s1.jpg"
    assert all(("annotations" in t) == (t["data"]["source"] == "strong") for t in tasks)
    pred = tasks[2]["predictions"][0]
    assert pred["model_version"] == "budgetseg" and 0 < pred["score"] <= 1
    region = pred["result"][0]
    assert region["type"] == "brushlabels" and region["value"]["format"] == "rle"
    assert (region["original_width"], region["original_height"]) == SIZES["p1"][::-1]
    assert 'Label value="ignore"' in (out / "labeling_config.xml").read_text()

    ds = LabelStudioDataset(out / "tasks.json", out / "images")
    assert ds.class_names == NAMES and ds.ids == STRONG + PSEUDO
    assert [ds.has_labels(i) for i in ds.ids] == [True, True, False, False]  # predictions are not labels
    want = truth(run, task)
    for i in STRONG:
        check_sample(ds.load(i), want[i], task)
    accepted = LabelStudioDataset(accept_predictions(out / "tasks.json", out / "accepted.json"), out / "images")
    for i in PSEUDO:
        check_sample(accepted.load(i), want[i], task)


def test_image_url_prefix(runs, tmp_path):
    export_run(runs["semantic"], "labelstudio", tmp_path / "ls", image_url_prefix="http://host:8081/")
    tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    assert tasks[3]["data"]["image"] == "http://host:8081/p2.png"
    ds = LabelStudioDataset(tmp_path / "ls" / "tasks.json", tmp_path / "ls" / "images")
    assert ds.image_path("p2") == tmp_path / "ls" / "images" / "p2.png"


# ----------------------------------------------------------------------------------------------- review order


def expected_errors(run: Path, task: str) -> dict[str, float]:
    """Computed here from the fixture's own files: semantic 1 - mean confidence, instance sum of 1 - score."""
    if task == "semantic":
        return {i: 1 - np.asarray(Image.open(run / "pseudo" / "conf" / f"{i}.png")).mean() / 255 for i in PSEUDO}
    return {"p1": (1 - 0.7) + (1 - 0.9) + (1 - 0.2), "p2": 1.0}  # p2: nothing found counts as one error


@pytest.mark.parametrize("task", ["semantic", "instance"])
def test_review_exports_the_pseudo_labels_with_the_most_expected_errors(runs, task, tmp_path):
    run, out = runs[task], tmp_path / "cvat"
    want = expected_errors(run, task)
    assert want["p1"] > want["p2"]  # the fixture's p1 is the less sure
    res = export_run(run, "cvat", out, review=1)
    assert res["strong_images"] == 2 and res["pseudo_images"] == 1 and res["review"] == 1
    assert (out / "strong.txt").read_text().split() == STRONG and (out / "pseudo.txt").read_text().split() == ["p1"]
    assert sorted(p.name for p in (out / "JPEGImages").iterdir()) == ["p1.jpg", "s1.jpg", "s2.jpg"]
    rows = [line.split(",") for line in (out / "review.csv").read_text().splitlines()]
    assert rows[0] == ["id", "expected_errors", "exported"]
    assert [(r[0], r[2]) for r in rows[1:]] == [("p1", "1"), ("p2", "0")]
    assert [float(r[1]) for r in rows[1:]] == pytest.approx([want["p1"], want["p2"]], abs=1e-5)
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["pseudo"] == ["p1"] and manifest["review"]["images"] == 1 and manifest["review"]["of"] == 2
    ds = VOCDataset(out, "default", class_names=NAMES)  # the reviewed export still reads back as strong labels
    assert ds.ids == STRONG + ["p1"]
    check_sample(ds.load("p1"), truth(run, task)["p1"], task)


def test_review_puts_the_most_expected_errors_first_in_every_layout(tmp_path):
    """Without K every pseudo-label is exported, in review order: here p2, once made the less sure one."""
    run = make_run(tmp_path, "semantic")
    Image.fromarray(np.full(SIZES["p2"], 40, np.uint8), mode="L").save(run / "pseudo" / "conf" / "p2.png")
    export_run(run, "labelstudio", tmp_path / "ls")
    tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    assert [t["data"]["sample_id"] for t in tasks] == STRONG + ["p2", "p1"]
    rows = (tmp_path / "ls" / "review.csv").read_text().splitlines()[1:]
    assert rows[0] == f"p2,{round(1 - 40 / 255, 5)},1" and rows[1].startswith("p1,") and rows[1].endswith(",1")
    res = export_run(run, "coco", tmp_path / "coco", review=5)  # more than there are: all of them
    assert res["pseudo_images"] == 2


def test_an_instance_run_whose_pseudo_labels_miss_an_image_is_an_error(tmp_path):
    run = make_run(tmp_path, "instance")
    path = run / "pseudo" / "pseudo_labels.json"
    data = json.loads(path.read_text())
    data["images"] = [im for im in data["images"] if im["file_name"] != "p2"]
    write_json(path, data)
    with pytest.raises(BudgetsegError, match="pseudo_labels.json: no entry for unlabeled image 'p2'"):
        export_run(run, "coco", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_review_of_a_semantic_run_without_confidence_maps_is_an_error(tmp_path):
    run = make_run(tmp_path, "semantic")
    (run / "pseudo" / "conf" / "p2.png").unlink()
    with pytest.raises(BudgetsegError, match="p2.png: confidence map is missing"):
        export_run(run, "cvat", tmp_path / "x")
    assert not (tmp_path / "x").exists()


# ----------------------------------------------------------------------------------------------- CLI


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["export", "--help"])
    assert e.value.code == 0 and "--to {cvat,coco,labelstudio,html}" in capsys.readouterr().out


def test_cli_json(runs, tmp_path, capsys):
    out = tmp_path / "exp"
    out.mkdir()  # an existing empty folder is fine
    assert main(["export", str(runs["instance"]), "--to", "coco", "--out", str(out), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)  # stdout holds the one JSON object and nothing else
    assert res["format"] == "coco" and res["task"] == "instance" and res["pseudo_images"] == 2
    assert (out / "annotations" / "instances_default.json").is_file()
    assert list(tmp_path.iterdir()) == [out]  # no temporary folder left beside it
    for to in ("cvat", "coco", "labelstudio", "html"):  # `files` names everything each layout wrote
        assert main(["export", str(runs["semantic"]), "--to", to, "--out", str(tmp_path / to), "--json"]) == 0
        files = json.loads(capsys.readouterr().out)["files"]
        assert {f.split("/")[0] for f in files} == {p.name for p in (tmp_path / to).iterdir()}, to


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    return err[0]


def test_cli_not_a_run(tmp_path, capsys):
    assert main(["export", str(tmp_path), "--to", "cvat", "--out", str(tmp_path / "x")]) == 2
    assert f"{tmp_path}: not a run folder (no config.yaml)" in error_line(capsys) and not (tmp_path / "x").exists()
    assert main(["export", str(tmp_path / "nope"), "--to", "cvat", "--out", str(tmp_path / "x")]) == 2
    assert f"{tmp_path / 'nope'}: no such run folder" in error_line(capsys)


def test_cli_review_must_be_positive(runs, tmp_path, capsys):
    assert main(["export", str(runs["semantic"]), "--to", "cvat", "--out", str(tmp_path / "x"), "--review", "0"]) == 2
    assert "review" in error_line(capsys) and not (tmp_path / "x").exists()


def test_cli_run_without_pseudo_labels(runs, tmp_path, capsys):
    run = make_run(tmp_path, "semantic")
    (run / "pseudo" / "summary.json").unlink()
    assert main(["export", str(run), "--to", "labelstudio", "--out", str(tmp_path / "x")]) == 2
    assert str(run) in error_line(capsys) and not (tmp_path / "x").exists()


def test_cli_refuses_non_empty_out(runs, tmp_path, capsys):
    out = tmp_path / "exp"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["export", str(runs["semantic"]), "--to", "cvat", "--out", str(out)]) == 2
    assert str(out) in error_line(capsys) and [p.name for p in out.iterdir()] == ["keep.txt"]


def test_failure_leaves_no_partial_out(tmp_path, capsys):
    run = make_run(tmp_path, "semantic")
    (tmp_path / "voc" / "JPEGImages" / "p2.png").unlink()  # found missing after three images
    before = set(tmp_path.iterdir())
    assert main(["export", str(run), "--to", "coco", "--out", str(tmp_path / "x")]) == 2
    assert "p2" in error_line(capsys)
    assert set(tmp_path.iterdir()) == before  # neither the export nor its temporary folder


def test_semantic_pseudo_labels_of_another_size_are_an_error(tmp_path):
    run = make_run(tmp_path, "semantic")
    write_png(run / "pseudo" / "labels" / "p2.png", np.zeros((3, 3), np.uint8))
    with pytest.raises(BudgetsegError, match="p2.png"):
        export_run(run, "cvat", tmp_path / "x")
    assert not (tmp_path / "x").exists()


# ----------------------------------------------------------------------------------------------- no background

SKY_NAMES = ["sky", "road", "car"]  # a label set without background (CamVid's kind): class 0 is a class


def make_sky_run(tmp: Path) -> Path:
    """A semantic run over a VOC pool without background (data.background false): every class, sky (0) included,
    covers pixels of the strong labels and of the pseudo-labels; 255 marks void / unsure pixels."""
    voc, labels = tmp / "voc", {}
    for k, i in enumerate(STRONG):
        sem = np.zeros(SIZES[i], np.uint8)  # sky everywhere
        sem[2:, :] = 1
        sem[3:, k + 1 : k + 3] = 2
        sem[0, 0] = IGNORE
        labels[i] = (Labels(sem, np.zeros((0, *SIZES[i]), bool), np.zeros(0, np.int64)), np.zeros_like(sem))
    write_voc(voc, {"train": STRONG + PSEUDO, "val": ["s1"]}, objects=False, labels=labels)
    write_jpeg(voc / "JPEGImages" / "p1.jpg", *SIZES["p1"])
    write_jpeg(voc / "JPEGImages" / "p2.jpg", *SIZES["p2"])
    write_lines(voc / "classes.txt", SKY_NAMES)
    run = tmp / "run-sky"
    data = DataConfig(format="voc", root=str(voc), background=False)
    save_config(run / "config.yaml", RunConfig(task="semantic", data=data))
    write_split(run / "split", Split(STRONG, PSEUDO))
    pseudo_semantic(run / "pseudo")  # classes 0 (sky), 1, 2 and 255
    write_json(run / "pseudo" / "summary.json", {"images": len(PSEUDO)})
    return run


def sky_truth(run: Path) -> dict[str, np.ndarray]:
    pool = open_dataset("voc", run.parent / "voc", "train", labels=LabelOptions(background=False))
    t = make_task("semantic", SKY_NAMES, background=False)
    pseudo = t.pseudo_labels(run / "pseudo")
    return {i: t.target(pool.load(i)) if i in STRONG else pseudo.target(i, SIZES[i]) for i in STRONG + PSEUDO}


@pytest.mark.parametrize("to", ["cvat", "coco", "labelstudio"])
def test_a_label_set_without_background_exports_every_class_and_reads_back(tmp_path, to):
    """Sky (class 0) is a class: each layout carries it and reads back, with data.background false, to the labels
    training saw. CVAT's label map starts with its background (black, unlabelled) so no class is black."""
    run, out = make_sky_run(tmp_path), tmp_path / to
    want = sky_truth(run)
    assert all((want[i] == 0).any() for i in ("s1", "p2")) and (want["s1"] == IGNORE).any()
    export_run(run, to, out)
    fmt, root, split = {"cvat": ("voc", out, "default"), "coco": ("coco", out, "default")}.get(
        to, ("labelstudio", out / "tasks.json", None)
    )
    back = open_dataset(fmt, root, split, labels=LabelOptions(background=False))
    assert back.class_names == SKY_NAMES and back.background is False
    if to == "labelstudio":  # the pseudo-labels are predictions: accepted, they become labels
        back = LabelStudioDataset(accept_predictions(out / "tasks.json", out / "ok.json"), out / "images", None, False)
    ids = {i: i for i in want} if to != "coco" else {back.images[k]["sample_id"]: k for k in back.ids}
    for i in STRONG + PSEUDO:
        np.testing.assert_array_equal(back.load(ids[i]).semantic, want[i], err_msg=f"{to} {i}")
    if to == "cvat":
        lines = (out / "labelmap.txt").read_text().splitlines()
        assert lines[1:3] == ["background:0,0,0::", "sky:128,0,0::"]
        rgb = out / "SegmentationClass" / "rgb.png"  # as CVAT exports masks: RGB, erased pixels black
        with Image.open(out / "SegmentationClass" / "s1.png") as im:
            arr = np.asarray(im.convert("RGB")).copy()
        arr[1, 1] = 0
        Image.fromarray(arr).save(rgb)
        got = VOCDataset(out, "default", background=False)._read_label(rgb, back.colours)
        assert got[1, 1] == 0  # black: CVAT's background, the label map's value 0 (load turns it into 255)
