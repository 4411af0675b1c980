"""End-to-end runs of the semantic pipeline on a tiny fashion-scenes build (64 px, a few dozen images)."""

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from budgetseg.cli import main
from budgetseg.config import load_config
from budgetseg.data.readers import open_dataset
from budgetseg.experiments.report import report
from budgetseg.pipeline import run
from budgetseg.trainlog import read_metrics

pytestmark = pytest.mark.slow
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}

TINY = [
    "n_strong=8",
    "data.size=64",
    "annotator.iterations=6",
    "annotator.batch_size=4",
    "annotator.epoch_iters=2",
    "segmenter.iterations=6",
    "segmenter.batch_size=4",
    "segmenter.epoch_iters=2",
    "annotator.log_every=2",
    "segmenter.log_every=2",
]


def tiny_config(root: Path, *extra: str):
    return load_config(None, [f"data.root={root}", *TINY, *extra])


def test_run_writes_a_complete_run_folder(tiny_data, tmp_path):
    out = tmp_path / "run"
    res = run(tiny_config(tiny_data, "pseudo.class_quantile=0.3"), out)
    assert res["task"] == "semantic" and res["n_strong"] == 8 and res["n_pseudo"] == 16
    assert res["budget_seconds"] == pytest.approx(
        8 * json.loads((out / "cost.json").read_text())["seconds_per_image"]["full"]
    )
    for net in ("annotation_net", "segmentation_net", "pseudo_labels"):
        assert 0.0 <= res[net]["miou"] <= 1.0
    assert 0.5 < res["pseudo_labels"]["kept_fraction"] < 0.9  # about 30 % of each class dropped
    assert set(res["wall_seconds"]) >= {
        "train_annotator",
        "pseudo_label",
        "train_segmenter",
        "evaluate_annotator",
        "evaluate_segmenter",
    }
    assert json.loads((out / "results.json").read_text()) == res
    strong = (out / "split" / "strong.txt").read_text().split()
    unlabeled = (out / "split" / "unlabeled.txt").read_text().split()
    assert len(strong) == 8 and len(unlabeled) == 16 and not set(strong) & set(unlabeled)
    assert sorted(p.stem for p in (out / "pseudo" / "labels").glob("*.png")) == sorted(unlabeled)
    assert len(list((out / "annotator" / "preview").glob("*.png"))) == 6
    assert not list(out.rglob("*.tmp"))
    # training curves: a row every log_every (2) iterations, the evaluated metric on the last
    for net in ("annotator", "segmenter"):
        rows = read_metrics(out / net / "metrics.csv")
        assert [r["iteration"] for r in rows] == [2, 4, 6] and all(r["loss"] > 0 and r["lr"] > 0 for r in rows)
        assert rows[-1]["val_miou"] == pytest.approx(
            res["annotation_net" if net == "annotator" else "segmentation_net"]["miou"], abs=1e-6
        )
        assert rows[0]["lr"] > rows[-1]["lr"] and rows[0]["encoder_lr"] == pytest.approx(0.1 * rows[0]["lr"])
    rep = report([out], tmp_path / "report")
    assert str(tmp_path / "report" / "curves_run.png") in rep["files"]
    assert "![training curves of run](curves_run.png)" in (tmp_path / "report" / "results.md").read_text()
    # a finished run is not silently overwritten, and resuming it does nothing new
    with pytest.raises(Exception, match="--resume"):
        run(tiny_config(tiny_data, "pseudo.class_quantile=0.3"), out)
    assert run(tiny_config(tiny_data, "pseudo.class_quantile=0.3"), out, resume=True) == res


def _cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "budgetseg.cli", *args],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_killed_run_resumes_to_the_same_result(tiny_data, tmp_path):
    args = ["run", "configs/fashion_semantic.yaml", "--set", f"data.root={tiny_data}"]
    # CPU runs are exact as they are; CUDA runs under deterministic algorithms (and they get batch workers)
    cuda = ["annotator.deterministic=true", "segmenter.deterministic=true"] if torch.cuda.is_available() else []
    for s in TINY + cuda:
        args += ["--set", s]
    ref = _cli(*args, "--out", str(tmp_path / "ref"))
    assert ref.wait(timeout=600) == 0, ref.stdout.read()
    # kill the second run once the annotator has written its first checkpoint, then resume it
    p = _cli(*args, "--out", str(tmp_path / "cut"))
    ckpt = tmp_path / "cut" / "annotator" / "last.pt"
    deadline = time.time() + 300
    while not ckpt.exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    p.kill()
    p.wait()
    assert not (tmp_path / "cut" / "results.json").exists()
    resumed = _cli(*args, "--out", str(tmp_path / "cut"), "--resume")
    out = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, out
    assert "resumed from" in out
    a = json.loads((tmp_path / "ref" / "results.json").read_text())
    b = json.loads((tmp_path / "cut" / "results.json").read_text())
    for key in ("annotation_net", "segmentation_net", "pseudo_labels"):
        assert a[key]["miou"] == b[key]["miou"], key


def test_two_processes_under_torchrun(tiny_data, tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "budgetseg.cli",
        "run",
        "configs/fashion_semantic.yaml",
        "--out",
        str(out),
        "--set",
        f"data.root={tiny_data}",
    ]
    for s in TINY:
        cmd += ["--set", s]
    p = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert res["n_pseudo"] == 16 and len(list((out / "pseudo" / "labels").glob("*.png"))) == 16
    assert res["annotation_net"]["images"] == 8  # both ranks' shares of val were counted once
    assert (out / "log.txt").read_text().count("done: f_theta") == 1  # only rank 0 writes
    # the pseudo-labels' confusion counts every labelled pixel of the unlabeled images once, whichever rank had it
    pool = open_dataset("voc", tiny_data, "train")
    ids = (out / "split" / "unlabeled.txt").read_text().split()
    labelled = sum(int((pool.load(i, with_image=False).semantic != 255).sum()) for i in ids)
    assert sum(map(sum, res["pseudo_labels"]["confusion"])) == labelled
    assert "most confused: " in (out / "log.txt").read_text()


def test_cli_errors_are_one_line(tiny_data, tmp_path, capsys):
    assert main(["run", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "missing.yaml: config file is missing" in err and err.count("\n") == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("annotator: {iterations: lots}\n")
    assert main(["run", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "annotator.iterations" in capsys.readouterr().err
    assert (
        main(["run", "configs/fashion_semantic.yaml", "--out", str(tmp_path / "r"), "--set", "data.root=/nonexistent"])
        == 2
    )
    assert "/nonexistent" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    weights = tmp_path / "no-such-weights.pt"
    args = ["run", "configs/fashion_semantic.yaml", "--out", str(tmp_path / "r"), "--set", f"data.root={tiny_data}"]
    assert main([*args, "--encoder-weights", str(weights)]) == 2
    assert f"{weights}: " in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_second_round_and_controls_train_f_theta_as_long_as_g_phi(tiny_data, tmp_path):
    from budgetseg.experiments.report import make_rows
    from budgetseg.experiments.sweep import reference_config

    cfg = tiny_config(tiny_data, "controls=true", "segmenter.init=annotator", "pseudo.rounds=2")
    out = tmp_path / "run"
    res = run(cfg, out, cache_dir=tmp_path / "cache")
    # round 1: f_theta labels the pool, g_phi 1 trains from it; round 2: g_phi 1 relabels, g_phi 2 trains from it
    r1 = json.loads((out / "pseudo_r1" / "summary.json").read_text())
    assert res["earlier_rounds"][0]["pseudo_labels"] == r1 and res["pseudo_labels"] != r1
    assert sorted(p.name for p in (out / "pseudo" / "labels").iterdir()) == sorted(
        p.name for p in (out / "pseudo_r1" / "labels").iterdir()
    )
    assert "segmenter: initialised from " + str(out / "segmenter_r1" / "model.pt") in (out / "log.txt").read_text()
    assert 0 <= res["earlier_rounds"][0]["segmentation_net"]["miou"] <= 1
    # g_phi's chain: f_theta 6 + round 1 6 + round 2 6 iterations; the control trains 18 on the strong images
    assert torch.load(out / "annotator_long" / "last.pt", weights_only=True)["iteration"] == 18
    assert torch.load(out / "annotator" / "last.pt", weights_only=True)["iteration"] == 6
    assert 0.0 <= res["annotation_net_long"]["miou"] <= 1.0
    assert res["annotation_net_long"] != res["annotation_net"]
    assert {"train_annotator_long", "evaluate_annotator_long"} <= set(res["wall_seconds"])
    row = make_rows([{"dir": out, "results": res, "config": {}}], "miou")[0]
    assert row["f_theta_long_miou"] == res["annotation_net_long"]["miou"]
    assert row["gain"] == pytest.approx(res["segmentation_net"]["miou"] - res["annotation_net_long"]["miou"], abs=1e-6)
    assert len(list((tmp_path / "cache").glob("*/model.pt"))) == 2  # both annotators can be shared
    ref = reference_config(cfg, 24)
    assert ref.annotator.iterations == 18 and ref.annotator.init == "pretrained" and not ref.controls


def test_augmented_control_is_f_theta_trained_as_long_with_the_augmentation(tiny_data, tmp_path):
    from budgetseg.experiments.report import make_rows, markdown
    from budgetseg.experiments.sweep import reference_config
    from budgetseg.modelfile import load_model_file

    cfg = tiny_config(tiny_data, "controls=true", "controls_augmented=true", "segmenter.init=annotator")
    out = tmp_path / "run"
    res = run(cfg, out, cache_dir=tmp_path / "cache")
    assert torch.load(out / "annotator_long_aug" / "last.pt", weights_only=True)["iteration"] == 12
    aug = load_model_file(out / "annotator_long_aug" / "model.pt")[0]
    plain = load_model_file(out / "annotator_long" / "model.pt")[0]
    assert any(not torch.equal(aug[k], plain[k]) for k in aug)  # the augmentation changed what it learned
    assert 0.0 <= res["annotation_net_long_aug"]["miou"] <= 1.0
    assert {"train_annotator_long_aug", "evaluate_annotator_long_aug"} <= set(res["wall_seconds"])
    assert len(list((tmp_path / "cache").glob("*/model.pt"))) == 3
    # the same network as f_theta trained on its own that long with the augmentation: so one trained with
    # `budgetseg train --net annotator` may stand in for it (docs/results/stronger-control/)
    alone = tiny_config(tiny_data, "annotator.iterations=12", "annotator.color_aug=true", "annotator.cutmix=true")
    run(alone, tmp_path / "alone", until="annotator")
    same = load_model_file(tmp_path / "alone" / "annotator" / "model.pt")[0]
    assert all(torch.equal(aug[k], same[k]) for k in aug)
    row = make_rows([{"dir": out, "results": res, "config": {}}], "miou")[0]
    g, f_aug = res["segmentation_net"]["miou"], res["annotation_net_long_aug"]["miou"]
    assert row["f_theta_long_aug_miou"] == f_aug and row["gain_vs_aug"] == pytest.approx(g - f_aug, abs=1e-6)
    header = markdown([row], "miou", "mIoU").splitlines()[0]
    assert "f_theta long + aug mIoU" in header and "gain vs aug" in header
    row.update(f_theta_long_aug_miou=None, gain_vs_aug=None)  # runs without it: no such columns
    assert "aug" not in markdown([row], "miou", "mIoU").splitlines()[0]
    ref = reference_config(cfg, 24)  # the reference has no controls, so a sweep with or without it shares one
    assert not ref.controls and not ref.controls_augmented


def test_augmented_control_of_an_augmented_f_theta_is_the_plain_control(tiny_data, tmp_path):
    # the default recipe augments f_theta already: the augmented control would be the same network, trained and
    # scored a second time
    keys = ("controls=true", "controls_augmented=true", "annotator.color_aug=true", "annotator.cutmix=true")
    out = tmp_path / "run"
    res = run(tiny_config(tiny_data, *keys, "segmenter.init=annotator"), out)
    assert not (out / "annotator_long_aug").exists()
    assert torch.load(out / "annotator_long" / "last.pt", weights_only=True)["iteration"] == 12
    assert res["annotation_net_long_aug"] == res["annotation_net_long"]
    assert res["annotation_net_long"]["miou"] != res["annotation_net"]["miou"]  # the control trained on
    assert "the augmented control is annotator_long" in (out / "log.txt").read_text()


def test_color_aug_max_n_picks_the_augmentation_by_the_number_of_strong_images(tiny_data, tmp_path):
    from budgetseg.modelfile import load_model_file

    cache, runs = tmp_path / "cache", {}

    def f_theta(name: str, *keys: str) -> dict:
        run(tiny_config(tiny_data, *keys), tmp_path / name, cache_dir=cache, until="annotator")
        runs[name] = (tmp_path / name / "log.txt").read_text()
        return load_model_file(tmp_path / name / "annotator" / "model.pt")[0]

    on = f_theta("on", "annotator.color_aug=true")
    # N = 8 <= 8: the same f_theta as color_aug: true, taken from the cache the first run filled
    assert all(torch.equal(on[k], v) for k, v in f_theta("auto_on", "annotator.color_aug_max_n=8").items())
    assert "annotator: colour jitter + cutout on (N=8, color_aug_max_n=8)" in runs["auto_on"]
    assert "annotator: reusing" in runs["auto_on"]
    # N = 8 > 7: the plain f_theta, trained anew, which a plain run then takes from the cache
    off = f_theta("auto_off", "annotator.color_aug_max_n=7")
    assert "colour jitter + cutout off (N=8" in runs["auto_off"] and "reusing" not in runs["auto_off"]
    assert any(not torch.equal(on[k], v) for k, v in off.items())
    assert all(torch.equal(off[k], v) for k, v in f_theta("plain").items()) and "reusing" in runs["plain"]
    # the saved config keeps the option, so a sweep finds the run and another N resolves anew
    assert "color_aug_max_n: 7" in (tmp_path / "auto_off" / "config.yaml").read_text()
    with pytest.raises(Exception, match="annotator.color_aug_max_n must be >= 0"):
        tiny_config(tiny_data, "annotator.color_aug_max_n=-1")


def test_a_trained_network_and_the_same_loaded_from_disk_answer_alike(tiny_data, tmp_path):
    # a resumed run, or one that takes f_theta from the cache, must pseudo-label to the last bit as the run that
    # trained it did: the same weights, and the same memory layout, which picks the convolution kernels
    from budgetseg.dist import SINGLE
    from budgetseg.engine.batches import TrainSet
    from budgetseg.plan import open_pool_and_val, prepare
    from budgetseg.runlog import Logger
    from budgetseg.stages import train_stage
    from budgetseg.tasks import make_task

    cfg, out = tiny_config(tiny_data), tmp_path / "run"
    pool, ids, _, _ = open_pool_and_val(cfg)
    out.mkdir()
    log = Logger(out / "log.txt", True)
    split, _ = prepare(cfg, out, pool, ids, False, False, SINGLE, log)
    task = make_task("semantic", pool.class_names)
    args = ("annotator", cfg.annotator, [TrainSet(pool, split.strong, task)], task, cfg, out, False, SINGLE, log)
    trained, loaded = train_stage(*args).eval(), train_stage(*args).eval()
    assert "trained model found" in (out / "log.txt").read_text()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        x = x.contiguous(memory_format=torch.channels_last)  # as training and inference feed it
        assert torch.equal(trained(x), loaded(x))


def test_augmented_control_refusals(tiny_data, tmp_path, capsys):
    with pytest.raises(Exception, match="controls_augmented works for the semantic task only"):
        tiny_config(tiny_data, "task=instance", "controls_augmented=true")
    args = ["sweep", "configs/fashion_semantic.yaml", "--out", str(tmp_path / "s"), "--set", f"data.root={tiny_data}"]
    assert main([*args, "--augmented-control", "--no-controls"]) == 2
    assert "--augmented-control and --no-controls: choose one" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    "key",
    ["annotator.consistency=1", "segmenter.consistency=1", "annotator.pseudo_cutmix=true", "segmenter.cutmix=true"],
)
def test_semantic_only_options_are_refused_on_instance(tiny_data, key):
    with pytest.raises(Exception, match=f"config key {key.split('=')[0]} works for the semantic task only"):
        tiny_config(tiny_data, "task=instance", key)


def test_evaluate_scores_a_run_that_trained_f_theta_alone_and_trains_nothing(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    run(tiny_config(tiny_data), out, until="annotator")
    assert main(["evaluate", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    res = json.loads(captured.out)
    assert 0.0 <= res["annotator"]["miou"] <= 1.0 and res["segmenter"] is None
    assert "g_phi not trained yet, scoring the networks that are" in captured.err
    assert not (out / "segmenter").exists() and not (out / "pseudo").exists()  # nothing trained
    assert not (out / "results.json").exists()
    run(tiny_config(tiny_data), out, resume=True)  # the whole run, then evaluate reads its results
    assert main(["evaluate", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["segmenter"]["miou"] >= 0.0 and "not trained yet" not in captured.err


def test_the_controls_a_run_trains_and_the_augmented_one_that_is_the_plain_one_again(tiny_data):
    from budgetseg.config import control_configs, for_n

    plain = tiny_config(tiny_data, "controls=true", "controls_augmented=true")
    nets = control_configs(plain)
    assert list(nets) == ["annotator_long", "annotator_long_aug"] and nets["annotator_long_aug"].cutmix
    assert nets["annotator_long"].iterations == 6  # as long as g_phi in all (from the ImageNet encoder: its own 6)
    started = tiny_config(tiny_data, "controls=true", "segmenter.init=annotator")
    assert control_configs(started)["annotator_long"].iterations == 12  # g_phi from f_theta: 6 + 6
    augmented = tiny_config(tiny_data, "controls=true", "controls_augmented=true", "annotator.color_aug_max_n=25")
    augmented = replace(augmented, annotator=replace(augmented.annotator, cutmix=True))
    assert list(control_configs(augmented)) == ["annotator_long", "annotator_long_aug"]  # color_aug unresolved
    resolved = replace(augmented, annotator=for_n(augmented.annotator, 8))  # N = 8 <= 25: colour jitter on
    assert list(control_configs(resolved)) == ["annotator_long"]  # the same network as annotator_long
    assert list(control_configs(tiny_config(tiny_data, "controls_augmented=true"))) == ["annotator_long_aug"]
