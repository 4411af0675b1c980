"""model.pt files that carry what the network needs to run (modelfile.py), and the pipeline writing them."""

from pathlib import Path

import pytest
import torch

from budgetseg import stages
from budgetseg.config import DataConfig, ModelConfig, RunConfig
from budgetseg.errors import BudgetsegError
from budgetseg.loop.predict import load_trained
from budgetseg.modelfile import VERSION, build_from_meta, check_meta, load_model_file, model_meta, save_model
from budgetseg.tasks import make_task

NAMES = ["background", "shirt", "bag"]
NONE = ModelConfig(encoder_weights="none")


@pytest.fixture(scope="module")
def semantic():
    """An untrained DeepLabv3+ (random weights; the format does not care) and its meta."""
    torch.manual_seed(0)
    model, _ = make_task("semantic", NAMES, NONE).build_model(NONE)
    return model, model_meta("semantic", "segmenter", NAMES, NONE, DataConfig(size=64))


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def one_line_error(path: Path) -> str:
    with pytest.raises(BudgetsegError) as err:
        load_model_file(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg
    return msg


def test_round_trip_builds_the_same_network(semantic, tmp_path):
    model, meta = semantic
    save_model(tmp_path / "model.pt", model, meta)
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # written atomically: no temp file left
    state, back = load_model_file(tmp_path / "model.pt")
    assert back == meta and same_weights(state, model.state_dict())
    assert back["size"] == 64 and back["mean"] == [0.5, 0.5, 0.5] and back["class_names"] == NAMES
    assert back["model"]["encoder"] == "tf_efficientnet_lite0" and back["budgetseg"]
    rebuilt, task = build_from_meta(tmp_path / "model.pt", state, back)
    assert task.name == "semantic" and task.class_names == NAMES and not rebuilt.training
    assert same_weights(rebuilt.state_dict(), model.state_dict())


def test_old_bare_state_dict_loads_without_meta(semantic, tmp_path):
    model, _ = semantic
    torch.save(model.state_dict(), tmp_path / "model.pt")
    state, meta = load_model_file(tmp_path / "model.pt")
    assert meta is None and same_weights(state, model.state_dict())


def test_bad_files_are_one_line_errors(semantic, tmp_path):
    model, meta = semantic
    assert "missing" in one_line_error(tmp_path / "nothing.pt")
    (tmp_path / "garbage.pt").write_text("not a model\n")
    assert "cannot read as a budgetseg model file (not a torch file" in one_line_error(tmp_path / "garbage.pt")
    save_model(tmp_path / "good.pt", model, meta)
    data = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    assert "(not a torch file, or a damaged one" in one_line_error(tmp_path / "cut.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    assert "not a budgetseg model file" in one_line_error(tmp_path / "list.pt")
    torch.save({"model": model.state_dict(), "iteration": 4}, tmp_path / "last.pt")
    assert "training checkpoint" in one_line_error(tmp_path / "last.pt")
    torch.save({"format": "budgetseg-model", "version": VERSION + 1, "meta": {}, "state_dict": {}}, tmp_path / "new.pt")
    assert "newer" in one_line_error(tmp_path / "new.pt")
    assert "folder" in one_line_error(tmp_path)


def test_weights_that_do_not_fit_their_meta(semantic, tmp_path):
    model, meta = semantic
    save_model(tmp_path / "model.pt", model, meta | {"class_names": NAMES + ["hat"]})
    state, back = load_model_file(tmp_path / "model.pt")
    with pytest.raises(BudgetsegError, match=r"model.pt: weights do not fit .* 2 of another shape"):
        build_from_meta(tmp_path / "model.pt", state, back)


def test_pipeline_saves_meta_and_reads_both_forms(semantic, tmp_path):
    model, _ = semantic
    rc = RunConfig(task="instance", model=ModelConfig(encoder_weights="none", steps=3, class_inputs=True))
    rsis, _ = make_task("instance", NAMES, rc.model, annotator=True).build_model(rc.model)
    stages.save_model(tmp_path / "model.pt", rsis, "annotator", make_task("instance", NAMES, rc.model), rc)
    state, meta = load_model_file(tmp_path / "model.pt")
    assert meta["task"] == "instance" and meta["net"] == "annotator" and meta["size"] == rc.data.size
    assert meta["model"]["steps"] == 3 and meta["model"]["class_inputs"] and meta["class_names"] == NAMES
    net, task = build_from_meta(tmp_path / "model.pt", state, meta)  # the annotator of a W-RSIS run is W-RSIS
    assert task.class_inputs and net.class_inputs and same_weights(net.state_dict(), rsis.state_dict())


@pytest.mark.parametrize("stage, net", [("annotator_long", "annotator"), ("segmenter_r1", "segmenter")])
def test_stage_networks_load_as_their_role(semantic, tmp_path, stage, net):
    """The control (annotator_long) and earlier ST++ rounds (segmenter_r1) are saved as the network they are, and
    files that named the stage instead (written before; a cached control reused as a run's f_theta) load so too:
    predict and evaluate take them."""
    model, _ = semantic
    rc = RunConfig(model=NONE)
    stages.save_model(tmp_path / "new.pt", model, stage, make_task("semantic", NAMES, NONE), rc)
    save_model(tmp_path / "old.pt", model, model_meta("semantic", stage, NAMES, NONE, DataConfig(size=64)))
    for name in ("new.pt", "old.pt"):
        assert load_model_file(tmp_path / name)[1]["net"] == net
        assert load_trained(tmp_path / name, net).meta["net"] == net


@pytest.mark.parametrize("name", ["full", "g_phi_n46"])
def test_the_shipped_camvid_networks_load_and_predict_a_frame_at_their_resolution(name):
    """docs/results/camvid/models: what `budgetseg predict` reads (the README's command)."""
    import numpy as np

    from budgetseg.api import load_model
    from budgetseg.modelfile import load_model_file

    path = f"docs/results/camvid/models/{name}.pt"
    _, meta = load_model_file(path)
    assert meta["task"] == "semantic" and len(meta["class_names"]) == 11 and meta["class_names"][0] == "sky"
    assert meta["background"] is False and meta["scale"] == 180
    net = load_model(path)
    frame = np.random.default_rng(0).integers(0, 255, (360, 480, 3), dtype=np.uint8)
    labels = np.asarray(net(frame))
    assert labels.shape == (360, 480) and labels.max() < 11


def test_category_ids_count_every_class_of_a_label_set_without_background():
    """A COCO label set read without background (data.background false): C names, C category ids."""
    sky = ["sky", "road", "car"]
    meta = model_meta("semantic", "segmenter", sky, NONE, DataConfig(size=64), background=False, category_ids=[3, 7, 9])
    check_meta("m.pt", meta)  # one id per class: accepted
    with pytest.raises(BudgetsegError, match="not one distinct id per class"):
        check_meta("m.pt", meta | {"category_ids": [7, 9]})
    with pytest.raises(BudgetsegError, match="not one distinct id per class"):  # with a background: 2 classes
        check_meta("m.pt", meta | {"background": True})
