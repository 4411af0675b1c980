"""`budgetseg predict` on images of every kind, from tiny untrained networks saved with their meta (the output
format does not depend on training), and its one-line errors that leave nothing behind."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from budgetseg.cli import main
from budgetseg.config import DataConfig, ModelConfig, RunConfig, save_config
from budgetseg.data.sample import voc_palette
from budgetseg.errors import BudgetsegError
from budgetseg.modelfile import model_meta, save_model
from budgetseg.tasks import make_task

NAMES = ["background", "shirt", "bag"]
NONE = ModelConfig(encoder_weights="none", steps=2)
# file name -> (width, height) of the upright image, as its predictions must be
SIZES = {"a.jpg": (70, 50), "b.png": (33, 97), "gray.png": (40, 40), "rgba.png": (64, 48), "rot.jpg": (40, 60)}


def write_images(folder: Path) -> None:
    """Different sizes, a grayscale and an RGBA PNG, and a JPEG stored 60x40 with EXIF orientation 6 (rotate 90
    degrees to view), so upright 40x60."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "b.png"):
        w, h = SIZES[name]
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / name)
    Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8), "L").save(folder / "gray.png")
    Image.fromarray(rng.integers(0, 255, (48, 64, 4), dtype=np.uint8), "RGBA").save(folder / "rgba.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(folder / "rot.jpg", exif=exif.tobytes())
    (folder / "notes.txt").write_text("not an image: skipped in folders\n")


def tiny_model(task_name: str, net: str = "segmenter", model_cfg: ModelConfig = NONE) -> torch.nn.Module:
    """Untrained; an RSIS has every step emit an object that covers the whole image (a known output)."""
    torch.manual_seed(0)
    model, _ = make_task(task_name, NAMES, model_cfg, annotator=net == "annotator").build_model(model_cfg)
    if task_name == "instance":
        for head in (model.mask_head, model.stop_head):
            torch.nn.init.zeros_(head.weight)
            torch.nn.init.constant_(head.bias, 10.0)
    return model


def save_tiny(path: Path, task_name: str, net: str = "segmenter", model_cfg: ModelConfig = NONE) -> Path:
    save_model(
        path, tiny_model(task_name, net, model_cfg), model_meta(task_name, net, NAMES, model_cfg, DataConfig(size=64))
    )
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("predict")
    write_images(root / "images")
    return {
        "images": root / "images",
        "semantic": save_tiny(root / "semantic.pt", "semantic"),
        "instance": save_tiny(root / "instance.pt", "instance"),
    }


def predict_json(capsys, *args: str) -> dict:
    assert main(["predict", *args, "--json"]) == 0
    out = capsys.readouterr().out
    return json.loads(out)  # stdout holds the JSON summary and nothing else


def test_semantic_label_maps_and_overlays(files, tmp_path, capsys):
    out = tmp_path / "out"
    res = predict_json(capsys, str(files["semantic"]), str(files["images"]), "--out", str(out), "--batch-size", "2")
    assert res["images"] == 5 and res["labels"] == 5 and res["task"] == "semantic" and res["net"] == "segmenter"
    assert res["out"] == str(out)
    for name, size in SIZES.items():
        stem = Path(name).stem
        with Image.open(out / f"{stem}.png") as im:
            assert im.mode == "P" and im.size == size
            assert im.getpalette()[: 3 * len(NAMES)] == voc_palette()[: 3 * len(NAMES)]
            assert np.asarray(im).max() < len(NAMES)
        with Image.open(out / "overlay" / f"{stem}.jpg") as im:
            assert im.format == "JPEG" and im.mode == "RGB" and im.size == size
    assert sorted(p.name for p in out.rglob("*")) == sorted(
        ["overlay"] + [f"{Path(n).stem}.png" for n in SIZES] + [f"{Path(n).stem}.jpg" for n in SIZES]
    )  # nothing else: no temp files


def test_instance_predictions_json(files, tmp_path, capsys):
    out = tmp_path / "out"
    inputs = [str(files["images"] / "rot.jpg"), str(files["images"])]  # rot.jpg twice: predicted once, first
    res = predict_json(capsys, str(files["instance"]), *inputs, "--out", str(out))
    assert res["task"] == "instance" and res["images"] == 5 and res["instances"] == 10
    preds = json.loads((out / "predictions.json").read_text())
    order = ["rot.jpg"] + sorted(n for n in SIZES if n != "rot.jpg")
    assert [p["file_name"] for p in preds] == [n for n in order for _ in range(2)]  # 2 steps, both objects
    for p in preds:
        assert p["image_id"] == order.index(p["file_name"]) + 1
        assert p["category_name"] == NAMES[p["category_id"]] and p["category_id"] >= 1
        w, h = SIZES[p["file_name"]]
        mask = mask_utils.decode(p["segmentation"])
        assert mask.shape == (h, w) and p["area"] == int(mask.sum()) == w * h
        assert p["bbox"] == [0, 0, w, h] and 0 < p["score"] <= 1
    for name, size in SIZES.items():
        with Image.open(out / "overlay" / f"{Path(name).stem}.jpg") as im:
            assert im.size == size


def test_mirror_tta_makes_the_label_map_mirror_equivariant(tmp_path, capsys):
    """--tta averages over the mirror: a mirrored photo then gets exactly the mirrored label map, which the
    network alone (untrained, so far from symmetric) does not give; and the scales reach the network too."""
    model = tiny_model("semantic")
    torch.nn.init.normal_(model.segmentation_head[0].weight, std=1.0)  # class scores that vary across the image
    save_model(tmp_path / "varied.pt", model, model_meta("semantic", "segmenter", NAMES, NONE, DataConfig(size=64)))
    image = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)  # the network's own side
    (tmp_path / "in").mkdir()
    Image.fromarray(image).save(tmp_path / "in" / "x.png")
    Image.fromarray(image[:, ::-1]).save(tmp_path / "in" / "y.png")
    maps = {}
    for name, extra in {"plain": [], "mirror": ["--tta", "--tta-scales", "1"], "scales": ["--tta"]}.items():
        out = tmp_path / name
        res = predict_json(capsys, str(tmp_path / "varied.pt"), str(tmp_path / "in"), "--out", str(out), *extra)
        want = None if not extra else {"mirror": True, "scales": [1.0] if name == "mirror" else [0.75, 1.0, 1.5]}
        assert res["tta"] == want
        maps[name] = [np.asarray(Image.open(out / f"{s}.png")) for s in "xy"]
    x, y = maps["mirror"]
    np.testing.assert_array_equal(y, x[:, ::-1])
    for name in ("plain", "scales"):
        assert (maps[name][0] != maps["mirror"][0]).any(), name  # each option changes the prediction
    x, y = maps["plain"]
    assert (y != x[:, ::-1]).mean() > 0.01


@pytest.mark.parametrize(
    "args, err",
    [
        (["--tta"], "applies to semantic networks; this is an instance one"),
        (["--tta-scales", "1,2"], "--tta-scales needs --tta"),
        (["--tta", "--tta-scales", "1,x"], "--tta-scales '1,x': expected numbers"),
        (["--tta", "--tta-scales", "0,1"], "--tta-scales 0,1: expected scales in (0, 4]"),
    ],
)
def test_bad_tta_is_one_line_and_writes_nothing(files, tmp_path, capsys, args, err):
    model = files["instance" if "semantic networks" in err else "semantic"]
    out = tmp_path / "out"
    assert main(["predict", str(model), str(files["images"]), "--out", str(out), *args]) == 2
    cap = capsys.readouterr()
    assert cap.err.startswith("budgetseg: error: ") and cap.err.count("\n") == 1 and err in cap.err
    assert not out.exists()


def test_run_folder_picks_its_network(files, tmp_path, capsys):
    run = tmp_path / "run"
    save_config(run / "config.yaml", RunConfig())
    save_tiny(run / "annotator" / "model.pt", "semantic", net="annotator")
    image = str(files["images"] / "a.jpg")
    assert main(["predict", str(run), image, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == f"budgetseg: error: run {run} has no trained segmenter; use --net annotator\n"
    res = predict_json(capsys, str(run), image, "--out", str(tmp_path / "out"), "--net", "annotator")
    assert res["net"] == "annotator" and res["model"] == str(run / "annotator" / "model.pt")
    assert (tmp_path / "out" / "a.png").is_file()


def test_old_model_file_in_a_run_folder_takes_meta_from_the_run(files, tmp_path, capsys):
    """A bare state dict (written before model files carried meta): task, size and model from config.yaml, class
    names from the run's dataset (here a COCO file of two categories and no images)."""
    data = tmp_path / "data"
    (data / "annotations").mkdir(parents=True)
    (data / "train").mkdir()
    cats = [{"id": 3, "name": "shirt"}, {"id": 7, "name": "bag"}]
    (data / "annotations" / "instances_train.json").write_text(
        json.dumps({"images": [], "annotations": [], "categories": cats})
    )
    cfg = RunConfig(task="instance", model=NONE)
    cfg.data.format, cfg.data.root, cfg.data.size = "coco", str(data), 64
    save_config(tmp_path / "run" / "config.yaml", cfg)
    (tmp_path / "run" / "segmenter").mkdir()
    torch.save(tiny_model("instance").state_dict(), tmp_path / "run" / "segmenter" / "model.pt")
    res = predict_json(capsys, str(tmp_path / "run"), str(files["images"] / "b.png"), "--out", str(tmp_path / "out"))
    assert res["task"] == "instance" and res["net"] == "segmenter" and res["images"] == 1
    preds = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert len(preds) == 2 and {p["category_name"] for p in preds} <= {"shirt", "bag"}  # the dataset's names


def corrupt(folder: Path) -> Path:
    """A folder holding one good image and one that is not an image at all."""
    folder.mkdir()
    shutil.copy(Path(__file__).parent / "test_predict.py", folder / "bad.jpg")
    Image.new("RGB", (20, 30)).save(folder / "good.png")
    return folder / "bad.jpg"


def truncated(folder: Path) -> Path:
    """A folder holding a good image and, after it, a PNG whose header is fine but whose pixels are cut off:
    found only once the first image's outputs are written."""
    folder.mkdir()
    Image.new("RGB", (20, 30)).save(folder / "a.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / "b.png")
    data = (folder / "b.png").read_bytes()
    (folder / "b.png").write_bytes(data[: len(data) // 2])
    return folder / "b.png"


def not_a_model(tmp_path: Path) -> Path:
    (tmp_path / "model.pt").write_text("hello\n")
    return tmp_path / "model.pt"


def bare_state_dict(tmp_path: Path) -> Path:
    model, _ = make_task("semantic", NAMES).build_model(NONE)
    torch.save(model.state_dict(), tmp_path / "old.pt")
    return tmp_path / "old.pt"


@pytest.mark.parametrize(
    "case, named",
    [
        ("corrupt image", "bad.jpg"),
        ("truncated image", "b.png"),
        ("missing input", "nothing.png"),
        ("empty folder", "empty"),
        ("same stem", "x.png"),
        ("not a model", "model.pt"),
        ("bare state dict outside a run", "old.pt"),
        ("W-RSIS annotator", "wrsis.pt"),
    ],
)
def test_bad_input_is_one_line_and_leaves_nothing(files, tmp_path, capsys, case, named):
    model, inputs = str(files["semantic"]), [str(files["images"])]
    if case == "corrupt image":
        inputs = [str(corrupt(tmp_path / "in").parent)]
    elif case == "truncated image":
        inputs = [str(truncated(tmp_path / "in").parent)]
    elif case == "missing input":
        inputs.append(str(tmp_path / "nothing.png"))
    elif case == "empty folder":
        (tmp_path / "empty").mkdir()
        inputs.append(str(tmp_path / "empty"))
    elif case == "same stem":
        (tmp_path / "in").mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / "in" / "x.jpg")
        Image.new("RGB", (8, 8)).save(tmp_path / "in" / "x.png")
        inputs = [str(tmp_path / "in")]
    elif case == "not a model":
        model = str(not_a_model(tmp_path))
    elif case == "bare state dict outside a run":
        model = str(bare_state_dict(tmp_path))
    else:
        cfg = ModelConfig(encoder_weights="none", steps=2, class_inputs=True)
        model = str(save_tiny(tmp_path / "wrsis.pt", "instance", net="annotator", model_cfg=cfg))
    out = tmp_path / "out"
    assert main(["predict", model, *inputs, "--out", str(out), "--batch-size", "1", "--json"]) == 2
    cap = capsys.readouterr()
    assert cap.out == ""
    assert cap.err.startswith("budgetseg: error: ") and cap.err.count("\n") == 1 and named in cap.err
    assert not out.exists()
    if case == "W-RSIS annotator":
        assert "--net segmenter" in cap.err


def test_device_is_chosen(files, tmp_path, capsys):
    res = predict_json(
        capsys, str(files["semantic"]), str(files["images"]), "--out", str(tmp_path / "a"), "--device", "cpu"
    )
    assert res["device"] == "cpu" and res["labels"] == 5


@pytest.mark.parametrize("device", ["gpu", "cuda:x"] + ([] if torch.cuda.is_available() else ["cuda", "cuda:1"]))
def test_bad_device_is_one_line_and_writes_nothing(files, tmp_path, capsys, device):
    out = tmp_path / "out"
    assert main(["predict", str(files["semantic"]), str(files["images"]), "--out", str(out), "--device", device]) == 2
    cap = capsys.readouterr()
    assert cap.err.startswith("budgetseg: error: ") and cap.err.count("\n") == 1 and device in cap.err
    assert not out.exists()


@pytest.mark.parametrize("task_name", ["semantic", "instance"])
def test_load_model_predicts_in_memory_as_predict_does(files, tmp_path, task_name):
    """budgetseg.load_model: an image array in, the label map (or the instances) `predict` writes out."""
    import budgetseg
    from budgetseg.data.sample import read_image, read_label_png

    out = tmp_path / "out"
    res = budgetseg.predict(files[task_name], [files["images"] / "a.jpg"], out, device="cpu")
    segment = budgetseg.load_model(files[task_name], device="cpu")
    image = read_image(files["images"] / "a.jpg")
    got = segment(image)
    if task_name == "semantic":
        assert got.dtype == np.uint8 and got.shape == image.shape[:2]
        assert np.array_equal(got, read_label_png(out / "a.png"))
    else:
        written = json.loads((out / "predictions.json").read_text())
        assert len(got) == res["instances"] == len(written)
        for (mask, c, score), p in zip(sorted(got, key=lambda i: -i[2]), written, strict=True):  # written by score
            assert np.array_equal(mask, mask_utils.decode(p["segmentation"]).astype(bool))
            assert c == p["category_id"] and score == pytest.approx(p["score"], abs=1e-5)
    with pytest.raises(BudgetsegError, match="expected an RGB image"):
        segment(image[..., 0])
