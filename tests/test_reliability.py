"""Faults a long run meets: kills at any point, two processes on one folder, a full disk, pools with nothing to
learn, stale temp files, bad files found late, resumed pseudo-labels (issue "Reliability under faults")."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from fixtures_data import write_coco, write_jpeg, write_voc

from budgetseg.config import PseudoConfig, load_config, save_config
from budgetseg.data.pool import Pool
from budgetseg.data.voc import VOCDataset
from budgetseg.errors import BudgetsegError
from budgetseg.experiments.sweep import sweep
from budgetseg.io import atomic_write, folder_lock, write_json
from budgetseg.pipeline import run
from budgetseg.pseudo import predict_pool
from budgetseg.semantic.task import SemanticTask

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
TINY = [
    "n_strong=8",
    "data.size=64",
    "annotator.iterations=5",  # not a multiple of epoch_iters: the last epoch is short
    "annotator.batch_size=4",
    "annotator.epoch_iters=2",
    "segmenter.iterations=3",
    "segmenter.batch_size=4",
    "segmenter.epoch_iters=10",  # fewer iterations than one epoch
]


def cli(*args: str, limit_bytes: int | None = None) -> subprocess.Popen:
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.Popen(
        [sys.executable, "-m", "budgetseg.cli", *args],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=limit if limit_bytes else None,
    )


def tiny(root: Path, *extra: str):
    return load_config(None, [f"data.root={root}", *TINY, *extra])


# ------------------------------------------------------------------------------------------- resume


@pytest.mark.slow
def test_resume_finishes_from_any_kill_state_and_clears_temp_files(tiny_data, tmp_path):
    out = tmp_path / "run"
    ref = run(tiny(tiny_data), out)
    # killed after f_theta's last checkpoint (iteration 5 of epochs of 2) but before its model.pt: the resumed
    # epoch loop has nothing left to train, and must still finish the stage
    for name in ("annotator/model.pt", "annotator/eval.json", "results.json"):
        (out / name).unlink()
    shutil.rmtree(out / "pseudo")
    shutil.rmtree(out / "segmenter")
    # and temp files that killed writers left behind
    for stale in (out / "annotator" / ".model.pt.x1y2.tmp", out / ".results.json.abc.tmp"):
        stale.write_bytes(b"half")
    with pytest.raises(BudgetsegError, match="--resume"):
        run(tiny(tiny_data), out)
    again = run(tiny(tiny_data), out, resume=True)
    for key in ("annotation_net", "segmentation_net", "pseudo_labels"):
        assert again[key]["miou"] == ref[key]["miou"], key
    assert not list(out.rglob("*.tmp")) and "removed 2 temp file(s)" in (out / "log.txt").read_text()
    # a train.json without its model.pt (killed between the two) retrains the stage instead of failing
    (out / "segmenter" / "model.pt").unlink()
    (out / "segmenter" / "eval.json").unlink()
    (out / "results.json").unlink()
    assert run(tiny(tiny_data), out, resume=True)["segmentation_net"]["miou"] == ref["segmentation_net"]["miou"]
    assert not (out / ".lock").exists()


# --------------------------------------------------------------------------------------------- lock


def test_lock_refuses_a_live_holder_and_takes_over_a_dead_ones(tmp_path):
    path = tmp_path / ".lock"
    with folder_lock(tmp_path):
        holder = json.loads(path.read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(BudgetsegError, match=rf"in use by process {os.getpid()} on"):
            with folder_lock(tmp_path):
                pass
    assert not path.exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "since": "then"}))
    with folder_lock(tmp_path):  # its holder is gone: taken over
        assert json.loads(path.read_text())["pid"] == os.getpid()
    path.write_text(json.dumps({"pid": 1, "host": "another-machine", "since": "then"}))
    with pytest.raises(BudgetsegError, match="in use by process 1 on another-machine"):
        with folder_lock(tmp_path):  # a holder on another host cannot be checked: refused
            pass


@pytest.mark.slow
def test_two_runs_on_one_folder_one_is_refused(tiny_data, tmp_path):
    out = tmp_path / "run"
    base = ["run", "configs/fashion_semantic.yaml", "--out", str(out), "--set", f"data.root={tiny_data}"]
    for s in TINY[1:]:
        base += ["--set", s]
    procs = [cli(*base, "--set", f"n_strong={n}") for n in (8, 12)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    err = next(e for code, e in results if code == 2).strip().splitlines()[-1]
    assert err.startswith("budgetseg: error:") and ("in use by process" in err or "differs" in err)
    res = json.loads((out / "results.json").read_text())
    assert res["n_strong"] == yaml.safe_load((out / "config.yaml").read_text())["n_strong"]


def test_sweep_refuses_a_finished_run_of_another_recipe(tmp_path):
    write_voc(tmp_path / "voc")
    cfg = load_config(None, [f"data.root={tmp_path / 'voc'}"])
    folder = tmp_path / "sweep" / "n0002"
    save_config(folder / "config.yaml", load_config(None, [f"data.root={tmp_path / 'voc'}", "n_strong=2"]))
    write_json(folder / "results.json", {"n_strong": 2})
    edited = load_config(None, [f"data.root={tmp_path / 'voc'}", "segmenter.lr=0.01"])
    with pytest.raises(BudgetsegError, match="n0002: finished with another configuration .differs in segmenter.lr"):
        sweep(edited, [2], tmp_path / "sweep", reference=False, controls=False)
    with pytest.raises(BudgetsegError, match="differs in controls"):  # it was run without the control
        sweep(cfg, [2], tmp_path / "sweep", reference=False)
    assert sweep(cfg, [2], tmp_path / "sweep", reference=False, controls=False) == [folder]  # the same: reused


# ------------------------------------------------------------------------------------------ disk full


def test_write_failures_are_one_line_errors_naming_the_file(tmp_path):
    code = (
        "import resource, signal, torch\n"
        "from budgetseg.io import atomic_write, atomic_open\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (100000, 100000))\n"
        "for name, write in [('a.bin', lambda f: f.write(b'x' * 300000)),\n"
        "                    ('m.pt', lambda f: torch.save({'w': torch.zeros(100000)}, f))]:\n"
        "    try:\n"
        f"        atomic_write('{tmp_path}/' + name, write)\n"
        "    except Exception as e:\n"
        "        print(type(e).__name__, e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV).stdout.splitlines()
    assert len(out) == 2, out
    assert out[0].startswith(f"BudgetsegError {tmp_path}/a.bin: cannot write (File too large; ")
    assert out[1].startswith(f"BudgetsegError {tmp_path}/m.pt: cannot write (the write stopped part-way: disk full")
    assert "MiB free" in out[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no temp file, no partial file


@pytest.mark.slow
def test_disk_full_during_a_run_is_one_line_and_resumable(tiny_data, tmp_path):
    out = tmp_path / "run"
    args = ["run", "configs/fashion_semantic.yaml", "--out", str(out), "--set", f"data.root={tiny_data}"]
    for s in TINY:
        args += ["--set", s]
    p = cli(*args, limit_bytes=2_000_000)  # enough for the small files, not for a checkpoint
    assert p.wait(timeout=600) == 2
    err = p.stderr.read().strip().splitlines()[-1]
    assert err.startswith(f"budgetseg: error: {out}/annotator/last.pt: cannot write (the write stopped part-way"), err
    assert not list(out.rglob("*.tmp")) and not (out / ".lock").exists()
    p = cli(*args, "--resume")  # room again: the run goes on
    assert p.wait(timeout=600) == 0, p.stderr.read()


# ---------------------------------------------------------------------------- nothing to learn, no NaN


def test_crowd_only_pool_is_refused_and_leaves_nothing(tmp_path):
    data = {
        "images": [{"id": k, "file_name": f"{k}.jpg", "width": 8, "height": 6} for k in (1, 2)],
        "categories": [{"id": 1, "name": "car"}],
        "annotations": [
            {"id": k, "image_id": k, "category_id": 1, "iscrowd": 1, "segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]]}
            for k in (1, 2)
        ],
    }
    write_coco(tmp_path / "annotations" / "instances_train.json", tmp_path / "train", data)
    over = ["task=instance", "data.format=coco", f"data.root={tmp_path}", "n_strong=1", "data.val_split=train"]
    with pytest.raises(BudgetsegError, match="hold no object instance .every annotation is crowd"):
        run(load_config(None, over + ["data.size=32"]), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_json_outputs_hold_no_nan(tmp_path):
    write_json(tmp_path / "r.json", {"ap50": float("nan"), "per": [1.0, float("inf")], "ok": 0.5})

    def refuse(name: str):
        raise ValueError(name)

    assert json.loads((tmp_path / "r.json").read_text(), parse_constant=refuse) == {
        "ap50": None,
        "per": [1.0, None],
        "ok": 0.5,
    }


# ---------------------------------------------------------------------------------- late validation


def test_bad_input_files_stop_the_run_before_training(tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    unlabeled = sorted((data / "JPEGImages").glob("train_*.jpg"))[-1]  # pool images are checked, labelled or not
    unlabeled.write_bytes(unlabeled.read_bytes()[:100])
    out = tmp_path / "run"
    args = ["run", "configs/fashion_semantic.yaml", "--out", str(out), "--set", f"data.root={data}"]
    for s in TINY:
        args += ["--set", s]
    t0 = time.time()
    p = cli(*args)
    assert p.wait(timeout=300) == 2
    err = p.stderr.read()
    last = err.rstrip("\n").split("\n")[-1].split("\r")[-1]  # what a terminal shows on the last line
    assert last.startswith(f"budgetseg: error: {unlabeled}: cannot read image"), err[-500:]
    assert not out.exists() and time.time() - t0 < 120  # nothing trained, nothing left
    shutil.copy(tiny_data / "JPEGImages" / unlabeled.name, unlabeled)
    bad_val = data / "SegmentationClass" / "val_00003.png"
    bad_val.write_bytes(b"not a png")
    with pytest.raises(BudgetsegError, match="val_00003.png: corrupt label PNG"):
        run(tiny(data), out)
    assert not out.exists()


# ------------------------------------------------------------------------------- resumed pseudo-labels


class BatchMixer(torch.nn.Module):
    """Logits that depend on the whole batch (as a forward pass's last bits do on its composition)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 1)

    def forward(self, x):
        return self.conv(x) + 3 * x.mean(dim=0, keepdim=True)


def test_resumed_pseudo_labels_are_byte_identical(tmp_path):
    write_voc(tmp_path / "voc", {"train": ["a", "b", "c"]})
    for k in range(7):
        write_jpeg(tmp_path / "voc" / "JPEGImages" / f"x{k}.jpg", 6, 8, color=(30 * k, 200 - 20 * k, 90))
    ds, ids = Pool(VOCDataset(tmp_path / "voc")), [f"x{k}" for k in range(7)]
    torch.manual_seed(0)
    model, task = BatchMixer(), SemanticTask(["background", "a", "b"])
    kw = dict(size=16, mean=(0.5,) * 3, std=(0.5,) * 3)
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    predict_pool(model, task, ds, ids, whole, PseudoConfig(batch_size=3), **kw)
    predict_pool(model, task, ds, ids, cut, PseudoConfig(batch_size=3), **kw)
    for k in (1, 4, 5, 6):  # killed mid-batch: x0 of batch 1 and x3 of batch 2 were written, the rest not
        for sub in ("raw", "conf"):
            (cut / sub / f"x{k}.png").unlink()
    predict_pool(model, task, ds, ids, cut, PseudoConfig(batch_size=3), **kw)
    for f in sorted(whole.rglob("*.png")):
        assert f.read_bytes() == (cut / f.relative_to(whole)).read_bytes(), f.name
    # the mixer really depends on the batch: the same image alone gives other confidences
    alone = tmp_path / "alone"
    predict_pool(model, task, ds, ["x5"], alone, PseudoConfig(batch_size=3), **kw)
    assert (alone / "conf" / "x5.png").read_bytes() != (whole / "conf" / "x5.png").read_bytes()


def test_writing_stays_atomic(tmp_path):
    with pytest.raises(ZeroDivisionError):
        atomic_write(tmp_path / "f.bin", lambda f: (f.write(b"half"), 1 / 0))
    assert list(tmp_path.iterdir()) == []


def test_sigterm_releases_the_lock_and_temp_files(tmp_path):
    """A scheduler's SIGTERM ends a command like Ctrl-C: the run folder's lock is released."""
    code = (
        "import os, signal, sys, threading\n"
        "from budgetseg import cli\n"
        "from budgetseg.io import folder_lock\n"
        "def work(args):\n"
        f"    with folder_lock({str(tmp_path)!r}):\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        threading.Event().wait(30)\n"
        "cli.cmd_cost = work  # the parser binds the command when main builds it\n"
        "sys.exit(cli.main(['cost']))\n"
    )
    t0 = time.time()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=60)
    assert done.returncode == 130 and "interrupted" in done.stderr and time.time() - t0 < 25
    assert not (tmp_path / ".lock").exists()
