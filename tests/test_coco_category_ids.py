"""A run trained on COCO data whose category ids are not 1..K (3 and 7, with a don't-care category 5 between them)
writes those ids wherever it writes COCO: predict's results and `export --to coco`; old model files without them
write 1..K as before."""

import json
from pathlib import Path

import pytest
import torch
from test_instance_pipeline import TINY, write_shapes_coco

from budgetseg.cli import main
from budgetseg.config import load_config
from budgetseg.data.coco import COCODataset
from budgetseg.errors import BudgetsegError
from budgetseg.modelfile import build_from_meta, load_model_file, save_model
from budgetseg.pipeline import run

pytestmark = pytest.mark.slow

NAMES = ["background", "square", "disc"]
OWN = {3: "square", 7: "disc"}  # the dataset's category id -> name


def renumber(path: Path) -> None:
    """Squares 5 -> 3, discs 9 -> 7, and a category `ignore` (5) holding one don't-care box in the first image."""
    data = json.loads(path.read_text())
    for a in data["annotations"]:
        a["category_id"] = {5: 3, 9: 7}[a["category_id"]]
    box = {"id": len(data["annotations"]) + 1, "image_id": 1, "category_id": 5, "iscrowd": 0, "area": 16}
    data["annotations"].append(box | {"segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]], "bbox": [0, 0, 4, 4]})
    data["categories"] = [{"id": 7, "name": "disc"}, {"id": 5, "name": "ignore"}, {"id": 3, "name": "square"}]
    path.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def coco_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("coco-ids")
    for split, n, seed in (("train", 24, 0), ("val", 8, 1)):
        write_shapes_coco(root / "data", split, n, seed)
        renumber(root / "data" / "annotations" / f"instances_{split}.json")
    run(load_config("configs/fashion_instance.yaml", [*TINY, f"data.root={root / 'data'}"]), root / "run")
    return root / "run"


def eager_copy(run_dir: Path, dest: Path, drop_ids: bool = False) -> Path:
    """The run's segmenter, its every step made to emit an object covering the image (whatever 8 iterations
    taught it), saved with the run's meta (without category_ids: as a file written before they existed)."""
    state, meta = load_model_file(run_dir / "segmenter" / "model.pt")
    model, _ = build_from_meta(run_dir / "segmenter" / "model.pt", state, meta)
    for head in (model.mask_head, model.stop_head):
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.constant_(head.bias, 10.0)
    meta = {k: v for k, v in meta.items() if k != "category_ids"} if drop_ids else meta
    save_model(dest, model, meta)
    return dest


def test_model_files_remember_the_datasets_category_ids(coco_run):
    for net in ("annotator", "segmenter"):
        _, meta = load_model_file(coco_run / net / "model.pt")
        assert meta["class_names"] == NAMES and meta["category_ids"] == [3, 7]


@pytest.mark.parametrize("old", [False, True])
def test_predict_writes_the_datasets_category_ids(coco_run, tmp_path, capsys, old):
    model = eager_copy(coco_run, tmp_path / "model.pt", drop_ids=old)
    images = coco_run.parent / "data" / "val"
    assert main(["predict", str(model), str(images), "--out", str(tmp_path / "out"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    preds = json.loads((tmp_path / "out" / "predictions.json").read_text())
    ids = {1: "square", 2: "disc"} if old else OWN  # old files: the class indices, as before
    assert res["categories"] == [{"id": i, "name": n} for i, n in ids.items()]
    assert preds and len(preds) == res["instances"]
    assert all(ids[p["category_id"]] == p["category_name"] for p in preds)


def test_export_to_coco_keeps_the_category_ids_and_reads_back(coco_run, tmp_path, capsys):
    out = tmp_path / "coco"
    assert main(["export", str(coco_run), "--to", "coco", "--out", str(out), "--json"]) == 0
    data = json.loads((out / "annotations" / "instances_default.json").read_text())
    assert [(c["id"], c["name"]) for c in data["categories"]] == [(3, "square"), (7, "disc"), (8, "ignore")]
    used = {a["category_id"] for a in data["annotations"]}
    assert {3, 7} <= used <= {3, 7, 8}  # the don't-care box is an `ignore` region
    assert json.loads((out / "export.json").read_text())["ignore_label"]["category_id"] == 8
    again = COCODataset(out / "annotations" / "instances_default.json", out / "images")
    assert again.class_names == NAMES and again.category_ids == [3, 7]


def test_a_model_file_with_bad_category_ids_is_a_one_line_error(coco_run, tmp_path):
    state, meta = load_model_file(coco_run / "segmenter" / "model.pt")
    for bad in ([3], [3, 3], [3, "7"], [0, 7]):
        with pytest.raises(BudgetsegError, match=r"model.pt: model metadata: category_ids .* one distinct id per"):
            build_from_meta(tmp_path / "model.pt", state, meta | {"category_ids": bad})
