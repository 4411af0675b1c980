"""Files from strangers (issue "Safe with files from strangers"): no code from checkpoints, no paths escaping their
folders, bounded memory on huge images, outputs owned while written, every number, name and output path checked
before anything is written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from budgetseg.cli import main
from budgetseg.config import ModelConfig, TrainConfig
from budgetseg.engine import train
from budgetseg.errors import BudgetsegError
from budgetseg.modelfile import load_model_file, model_meta, save_model
from budgetseg.models.encoders import create_encoder
from budgetseg.tasks import SemanticTask, make_task

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
    model = torch.nn.Conv2d(3, 2, 1)
    task = SemanticTask(["background", "a"])
    cfg = TrainConfig(iterations=2, batch_size=2, epoch_iters=1, scale_min=1, scale_max=1)
    kw = dict(size=16, mean=(0.5,) * 3, std=(0.5,) * 3, seed=0, log=lambda s: None)
    train(model, [Pixels()], task.loss, cfg, tmp_path / "ok", resume=False, **kw)
    good = torch.load(tmp_path / "ok" / "last.pt", weights_only=True)  # what budgetseg saves loads safely
    assert good["iteration"] == 2 and good["config"]["iterations"] == 2
    crafted(tmp_path / "evil" / "last.pt", marker, good)
    with pytest.raises(BudgetsegError, match=r"evil/last.pt: not loaded: it holds Python objects") as err:
        train(model, [Pixels()], task.loss, cfg, tmp_path / "evil", resume=True, **kw)
    assert not marker.exists() and "weights_only" not in str(err.value)
    torch.save(good | {"iteration": 10**9}, tmp_path / "evil" / "last.pt")  # not this schedule's
    with pytest.raises(BudgetsegError, match=r"last.pt: not a training checkpoint of this network's 2 iterations"):
        train(model, [Pixels()], task.loss, cfg, tmp_path / "evil", resume=True, **kw)


def test_a_crafted_model_file_runs_no_code_and_says_why(tmp_path, capsys):
    marker = tmp_path / "ran"
    torch.manual_seed(0)
    model, _ = make_task("semantic", NAMES, NONE).build_model(NONE)
    save_model(tmp_path / "good.pt", model, model_meta("semantic", "segmenter", NAMES, NONE, 64))
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
