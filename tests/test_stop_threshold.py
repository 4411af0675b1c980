"""model.stop_threshold: where an RSIS sequence stops, a config key saved with the model, replaced by predict's and
evaluate's --stop-threshold, and measured at several values by `evaluate --stop-thresholds`."""

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from test_instance_pipeline import TINY, write_shapes_coco
from test_predict import save_tiny

from budgetseg.cli import main
from budgetseg.config import load_config, save_config
from budgetseg.data.readers import open_dataset
from budgetseg.engine.infer import predict
from budgetseg.errors import BudgetsegError
from budgetseg.instance.decode import select_instances
from budgetseg.modelfile import build_from_meta, load_model_file, save_model
from budgetseg.pipeline import run
from budgetseg.tasks import make_task

THRESHOLDS = (0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95)


def cli_json(capsys, *args: str) -> dict:
    assert main([*args, "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def test_a_lower_threshold_keeps_the_same_instances_and_maybe_more():
    """On random steps (objectness, some empty masks): the instances at a threshold are the first ones of those at
    any lower threshold."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        t = int(rng.integers(1, 8))
        steps = {
            "objectness": torch.from_numpy(rng.random(t)).float(),
            "probs": torch.from_numpy(rng.random((t, 3))).float().softmax(-1),
            "masks": torch.from_numpy(rng.random((t, 4, 4)) < rng.random((t, 1, 1)) * 0.3),
        }
        found = [select_instances(steps, s) for s in THRESHOLDS]
        for lower, higher in zip(found, found[1:], strict=False):
            assert len(higher) <= len(lower)
            assert all(np.array_equal(a[0], b[0]) and a[1:] == b[1:] for a, b in zip(higher, lower, strict=False))


@pytest.mark.parametrize("value", ["1.5", "0", "1", "-0.2", "nan"])
def test_the_config_key_lies_in_the_open_unit_interval(value):
    with pytest.raises(BudgetsegError, match=r"^config key model.stop_threshold must lie in \(0, 1\)"):
        load_config(None, [f"model.stop_threshold={value}"])
    low = load_config(None, ["model.stop_threshold=0.3", "task=instance"])
    assert make_task("instance", ["background", "a"], low.model).stop_threshold == 0.3  # pseudo-labels, evaluation
    assert load_config(None).model.stop_threshold == 0.5


def full_masks(path: Path) -> None:
    """Model file `path` with its mask head made to cover the image at every step (8 iterations teach no mask:
    every step's would be empty, every count 0), the stop head as trained, so that the objects an image gets
    depend on the stop threshold alone (objectness 0.1 to 0.7 here)."""
    state, meta = load_model_file(path)
    model, _ = build_from_meta(path, state, meta)
    torch.nn.init.zeros_(model.mask_head.weight)
    torch.nn.init.constant_(model.mask_head.bias, 10.0)
    save_model(path, model, meta)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Two tiny RSIS runs sharing one annotator cache, one at the default stop threshold (its networks then given
    full masks), one at 0.3."""
    root = tmp_path_factory.mktemp("stops")
    write_shapes_coco(root / "data", "train", 24, seed=0)
    write_shapes_coco(root / "data", "val", 8, seed=1)
    out = {}
    for name, more in (("default", []), ("low", ["model.stop_threshold=0.3"])):
        cfg = load_config("configs/fashion_instance.yaml", [*TINY, f"data.root={root / 'data'}", *more])
        run(cfg, root / name, cache_dir=root / "cache")
        out[name] = root / name
    for net in ("annotator", "segmenter"):
        full_masks(out["default"] / net / "model.pt")
    return out


@pytest.mark.slow
def test_the_threshold_is_saved_with_the_model_and_a_cached_annotator_is_shared(runs, tmp_path, capsys):
    for name, want in (("default", 0.5), ("low", 0.3)):
        for net in ("annotator", "segmenter"):
            state, meta = load_model_file(runs[name] / net / "model.pt")
            assert meta["model"]["stop_threshold"] == want
            assert build_from_meta(runs[name] / net / "model.pt", state, meta)[1].stop_threshold == want
    assert "annotator: reusing" in (runs["low"] / "log.txt").read_text()  # it changes no weights
    images = runs["low"].parent / "data" / "val"
    res = cli_json(capsys, "predict", str(runs["low"]), str(images), "--out", str(tmp_path / "own"))
    assert res["stop_threshold"] == 0.3
    low = cli_json(
        capsys, "predict", str(runs["low"]), str(images), "--out", str(tmp_path / "o"), "--stop-threshold", "0.05"
    )
    assert low["stop_threshold"] == 0.05 and low["instances"] >= res["instances"]


@pytest.mark.slow
def test_older_model_files_stop_at_one_half_and_bad_values_are_one_line_errors(runs, tmp_path):
    path = runs["low"] / "segmenter" / "model.pt"
    state, meta = load_model_file(path)
    old = meta | {"model": {k: v for k, v in meta["model"].items() if k != "stop_threshold"}}
    assert build_from_meta(path, state, old)[1].stop_threshold == 0.5
    with pytest.raises(BudgetsegError, match=r"model.pt: model metadata: model.stop_threshold must lie in \(0, 1\)"):
        build_from_meta(path, state, meta | {"model": meta["model"] | {"stop_threshold": 1.5}})


@pytest.mark.slow
def test_predicted_objects_per_image_only_grow_as_the_threshold_falls(runs):
    """The trained segmenter on every val image, decoded once and finished at each threshold."""
    state, meta = load_model_file(runs["default"] / "segmenter" / "model.pt")
    model, task = build_from_meta(runs["default"] / "segmenter" / "model.pt", state, meta)
    val = open_dataset("coco", runs["default"].parent / "data", "val")
    kw = dict(size=int(meta["size"]), mean=tuple(meta["mean"]), std=tuple(meta["std"]), finish=False)
    counts = []
    for _, steps in predict(model, val, list(val.ids), task, **kw):
        counts.append([len(select_instances(steps, t)) for t in THRESHOLDS])
    assert len(counts) == len(val.ids)
    assert all(c == sorted(c, reverse=True) for c in counts)
    assert len({n for c in counts for n in c}) > 2  # the threshold does decide


@pytest.mark.slow
def test_evaluate_at_several_stop_thresholds(runs, capsys):
    run_dir = runs["default"]
    res = cli_json(capsys, "evaluate", str(run_dir), "--stop-thresholds", "0.5,0.2,0.8")
    assert res["val"]["images"] == 8 and res["val"]["stop_threshold"] is None
    for net in ("annotator", "segmenter"):
        assert res[net]["stop_threshold"] == 0.5 and res[net]["images"] == 8
        rows = res[net]["stop_thresholds"]
        assert [r["stop_threshold"] for r in rows] == [0.2, 0.5, 0.8]  # ascending
        for r in rows:
            assert {"ap50", "sbd", "dic", "abs_dic", "fbd", "predictions"} <= set(r) and r["abs_dic"] >= 0
        assert [r["predictions"] for r in rows] == sorted((r["predictions"] for r in rows), reverse=True)
        assert rows[0]["predictions"] > rows[-1]["predictions"] and rows[0]["dic"] > rows[-1]["dic"]
    saved = run_dir / "evaluations" / "coco-data-val-stops-0.2-0.5-0.8" / "evaluation.json"
    assert json.loads(saved.read_text()) == res
    one = cli_json(capsys, "evaluate", str(run_dir), "--stop-threshold", "0.5")  # one evaluation at 0.5
    row = res["segmenter"]["stop_thresholds"][1]
    assert all(one["segmenter"][k] == row[k] for k in ("ap50", "sbd", "dic", "abs_dic", "predictions"))
    assert one["val"]["stop_threshold"] == 0.5
    assert main(["evaluate", str(run_dir), "--stop-thresholds", "0.2,0.8"]) == 0  # the table
    table = [[c.strip() for c in line.strip("|").split(" | ")] for line in capsys.readouterr().out.splitlines()]
    assert table[0][:5] == ["network", "stop threshold", "AP50", "SBD", "\\|DiC\\|"] and table[0][-1] == "objects"
    assert [r[:2] for r in table[2:]] == [[n, t] for n in ("annotator", "segmenter") for t in ("0.2", "0.8")]


def test_evaluate_scores_the_runs_own_val_set_as_the_run_did(runs, tmp_path, capsys):
    """A run that scored the first data.limit_val val images is scored on those again (its results.json's), not on
    the whole split; another split is scored whole."""
    run_dir = tmp_path / "limited"
    shutil.copytree(runs["default"], run_dir, ignore=shutil.ignore_patterns("evaluations"))
    cfg = load_config(run_dir / "config.yaml")
    save_config(run_dir / "config.yaml", dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, limit_val=5)))
    res = cli_json(capsys, "evaluate", str(run_dir), "--stop-thresholds", "0.5")
    assert res["val"]["images"] == 5 and res["segmenter"]["images"] == 5
    relative = os.path.relpath(runs["default"].parent / "data")  # the run's own root, named otherwise
    again = cli_json(capsys, "evaluate", str(run_dir), "--val-root", relative, "--stop-threshold", "0.5")
    assert again["val"]["images"] == 5
    other = cli_json(capsys, "evaluate", str(run_dir), "--val-split", "train", "--stop-threshold", "0.5")
    assert other["val"]["images"] == 24


@pytest.mark.slow
def test_stop_threshold_errors_are_one_line(runs, tmp_path, capsys):
    run_dir = str(runs["default"])
    for args in (["--stop-threshold", "1.5"], ["--stop-thresholds", "0.3,1"], ["--stop-thresholds", ","]):
        assert main(["evaluate", run_dir, *args]) == 2
        assert "(0, 1)" in capsys.readouterr().err
    both = ["evaluate", run_dir, "--stop-threshold", "0.4", "--stop-thresholds", "0.3,0.5"]
    assert main(both) == 2 and "give one" in capsys.readouterr().err
    semantic = save_tiny(tmp_path / "semantic.pt", "semantic")
    images = runs["default"].parent / "data" / "val"
    args = ["predict", str(semantic), str(images), "--out", str(tmp_path / "out"), "--stop-threshold", "0.4"]
    assert main(args) == 2
    assert "semantic.pt: --stop-threshold applies to instance networks" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_evaluate_scores_the_control_beside_f_theta_and_g_phi(runs, tmp_path, capsys):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(runs["default"], run_dir, ignore=shutil.ignore_patterns("evaluations"))
    res = cli_json(capsys, "evaluate", str(run_dir), "--stop-thresholds", "0.2,0.5")
    assert "annotator_long" not in res  # no control trained: none reported
    (run_dir / "annotator_long").mkdir()
    shutil.copy(run_dir / "annotator" / "model.pt", run_dir / "annotator_long" / "model.pt")
    res = cli_json(capsys, "evaluate", str(run_dir), "--stop-thresholds", "0.3")
    assert res["annotator_long"]["stop_thresholds"] == res["annotator"]["stop_thresholds"]  # the same weights
    assert main(["evaluate", str(run_dir), "--stop-thresholds", "0.3"]) == 0
    names = [line.split("|")[1].strip() for line in capsys.readouterr().out.splitlines()[2:]]
    assert names == ["annotator", "annotator_long", "segmenter"]
