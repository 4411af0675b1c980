from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from budgetseg.data.sample import encode_label_png
from budgetseg.experiments.report import grid_columns, load_runs, make_rows, plot_budget, report

H, W = 24, 32
VAL = ["v0", "v1", "v2", "v3", "v4", "v5"]


def write_label(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        encode_label_png(arr, f)


def truth(k: int) -> np.ndarray:
    """uint8 (H, W): a cat (1) and a dog (2) whose places depend on k, an ignore (255) border round the cat."""
    lab = np.zeros((H, W), np.uint8)
    lab[2 + k : 12 + k, 3:13] = 255
    lab[3 + k : 11 + k, 4:12] = 1
    lab[10:20, 16 + k : 28] = 2
    return lab


def write_val_set(root: Path) -> None:
    """A tiny VOC-layout val set: JPEGImages, SegmentationClass, ImageSets/Segmentation/val.txt, classes.txt."""
    rng = np.random.default_rng(0)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(VAL) + "\n")
    (root / "classes.txt").write_text("background\ncat\ndog\n")
    for k, i in enumerate(VAL):
        lab = truth(k)
        img = np.where((lab % 255)[..., None] > 0, [220, 120, 40], [60, 90, 140]) + rng.integers(0, 30, (H, W, 3))
        Image.fromarray(img.astype(np.uint8)).save(root / "JPEGImages" / f"{i}.jpg")
        write_label(root / "SegmentationClass" / f"{i}.png", lab)


def net(miou: float) -> dict:
    return {"miou": miou, "pixel_accuracy": 0.9, "per_class_iou": {"background": 0.9, "cat": miou, "dog": miou}}


def write_run(folder: Path, data_root: Path, n: int, m: int, f: float, g: float | None, finished: bool = True) -> None:
    """A run folder as pipeline.run leaves it (only what the report reads); previews get worse as f drops."""
    cfg = {
        "task": "semantic",
        "seed": 0,
        "n_strong": n,
        "data": {"format": "voc", "root": str(data_root), "train_split": "train", "val_split": "val", "size": 64},
    }
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    rng = np.random.default_rng(n)
    for stage, score in (("annotator", f), ("segmenter", g)):
        if score is None:
            continue
        for k, i in enumerate(VAL):
            pred = np.where(truth(k) == 255, 1, truth(k))
            noise = rng.random((H, W)) > score
            write_label(folder / stage / "preview" / f"{i}.png", np.where(noise, rng.integers(0, 3, (H, W)), pred))
    if not finished:
        return
    hours = n * 0.1
    results = {
        "task": "semantic",
        "n_strong": n,
        "n_pseudo": m,
        "budget_seconds": hours * 3600,
        "budget_hours": hours,
        "budget_days": hours / 8,
        "annotation_net": net(f),
        "segmentation_net": net(g) if m else None,
        "annotation_net_long": net(f + LONGER) if m else None,  # the control, in runs with pseudo-labels
        "pseudo_labels": {"miou": f + 0.02, "kept_fraction": 0.8, "thresholds": [0.9, 0.9, 0.9]} if m else None,
        "wall_seconds": {"train_annotator": 1.0},
    }
    (folder / "results.json").write_text(json.dumps(results))


POOL = 400
LONGER = 0.03  # the longer-trained f_theta's lead over f_theta in the toy runs
SWEEP = [  # (folder, N, f_theta mIoU, g_phi mIoU), written out of order to check the sorting
    ("n100", 100, 0.55, 0.60),
    ("n10", 10, 0.30, 0.38),
    ("n40", 40, 0.45, 0.52),
]


@pytest.fixture
def runs(tmp_path: Path) -> list[Path]:
    write_val_set(tmp_path / "data")
    dirs = []
    for name, n, f, g in SWEEP:
        write_run(tmp_path / "sweep" / name, tmp_path / "data", n, POOL - n, f, g)
        dirs.append(tmp_path / "sweep" / name)
    write_run(tmp_path / "sweep" / "n200", tmp_path / "data", 200, 200, 0.6, 0.62, finished=False)
    write_run(tmp_path / "full" / "all", tmp_path / "data", POOL, 0, 0.70, None)
    return dirs + [tmp_path / "sweep" / "n200", tmp_path / "full" / "all"]


def test_report(runs: list[Path], tmp_path: Path, caplog):
    out = tmp_path / "report"
    res = report(runs, out, grid_images=3, title="toy sweep")
    assert "n200" in caplog.text  # the unfinished run is named in a warning (logger budgetseg)

    expected = sorted(SWEEP, key=lambda s: s[1])
    lines = res["table"].splitlines()
    assert len(lines) == 2 + len(SWEEP) + 1  # header, separator, runs, reference
    for line, (name, n, f, g) in zip(lines[2:], expected, strict=False):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[:3] == [name, str(n), str(POOL - n)]
        fl = f + LONGER
        scores = [f"{100 * f:.1f}", f"{100 * fl:.1f}", f"{100 * g:.1f}", f"{100 * (g - fl):+.1f}"]
        scores += [f"{100 * (g - f):+.1f}", f"{100 * f + 2:.1f}", "80.0"]
        assert cells[5:12] == scores
        assert float(cells[3]) == pytest.approx(n * 0.1)
    ref = [c.strip() for c in lines[-1].strip("|").split("|")]
    assert ref[:3] == ["full supervision", str(POOL), "-"] and ref[5:] == ["-", "-", "70.0", "-", "-", "-", "-"]
    assert "n200" not in res["table"]

    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["run"] for r in rows] == [s[0] for s in expected] + ["full supervision"]
    for r, (_, n, f, g) in zip(rows, expected, strict=False):
        assert int(r["n_strong"]) == n and int(r["n_pseudo"]) == POOL - n
        assert float(r["f_theta_miou"]) == f and float(r["g_phi_miou"]) == g
        assert float(r["f_theta_long_miou"]) == pytest.approx(f + LONGER)
        assert float(r["gain"]) == pytest.approx(g - f - LONGER) and float(r["gain_vs_f_theta"]) == pytest.approx(g - f)
        assert float(r["kept_fraction"]) == 0.8
    assert float(rows[-1]["g_phi_miou"]) == 0.70 and rows[-1]["f_theta_miou"] == "" and rows[-1]["gain"] == ""
    saved = json.loads((out / "report.json").read_text())["rows"]
    assert [r["reference"] for r in saved] == [False] * len(SWEEP) + [True]

    names = {"results.md", "results.csv", "report.json", "miou_vs_budget.png", "grid.png"}
    assert {p.name for p in out.iterdir()} == names  # no temp files left behind
    assert {Path(p).name for p in res["files"]} == names
    assert res["table"] in (out / "results.md").read_text()
    with Image.open(out / "miou_vs_budget.png") as im:
        assert 600 < im.width < 1400 and 400 < im.height < 1000
    with Image.open(out / "grid.png") as im:  # 3 image rows; image, truth, 3 x (f, g), reference = 9 columns
        assert 1.3 < im.width / im.height < 4 and im.width > 9 * 100


def test_several_recipes_and_no_previews(runs: list[Path], tmp_path: Path):
    other = tmp_path / "recipe-b" / "n10"
    write_run(other, tmp_path / "data", 10, POOL - 10, 0.32, 0.41)
    for p in tmp_path.glob("*/*/*/preview/*.png"):
        p.unlink()
    res = report(runs + [other], tmp_path / "out")
    run_cells = [line.split("|")[1].strip() for line in res["table"].splitlines()[2:]]
    assert run_cells == ["recipe-b/n10", "sweep/n10", "sweep/n40", "sweep/n100", "full supervision"]
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "results.md",
        "results.csv",
        "report.json",
        "miou_vs_budget.png",
    }  # no grid without previews


def test_nothing_finished(tmp_path: Path):
    (tmp_path / "a").mkdir()
    with pytest.raises(Exception, match="results.json"):
        report([tmp_path / "a"], tmp_path / "out")


# pixel counts, rows: ground truth (background, cat, dog), columns: prediction
PSEUDO_CM = [[90, 5, 5], [0, 6, 4], [2, 8, 10]]
G_PHI_CM = [[95, 3, 2], [1, 9, 0], [0, 5, 15]]


def test_confusion_matrices(runs: list[Path], tmp_path: Path):
    """Runs that carry confusion matrices (pseudo-labels and g_phi) get confusion.png and their most confused
    pairs, by share of the ground-truth class's pixels, in results.md and report.json."""
    for folder in runs[:2]:  # n100 and n10; n40 was made before the matrices were recorded
        path = folder / "results.json"
        res = json.loads(path.read_text())
        res["pseudo_labels"] |= {"confusion": PSEUDO_CM, "per_class_iou": {"background": 1, "cat": 1, "dog": 1}}
        res["segmentation_net"]["confusion"] = G_PHI_CM
        path.write_text(json.dumps(res))
    out = tmp_path / "report"
    saved = report(runs, out)["confusions"]
    # pseudo-labels: cat -> dog 4/10, dog -> cat 8/20, dog -> background 2/20; g_phi: dog -> cat 5/20, ...
    pseudo = [{"truth": "cat", "predicted": "dog", "share": 0.4}, {"truth": "dog", "predicted": "cat", "share": 0.4}]
    pseudo.append({"truth": "dog", "predicted": "background", "share": 0.1})
    g_phi = [
        {"truth": "dog", "predicted": "cat", "share": 0.25},
        {"truth": "cat", "predicted": "background", "share": 0.1},
    ]
    g_phi.append({"truth": "background", "predicted": "cat", "share": 0.03})
    assert saved == [
        {"run": "n10", "of": "pseudo-labels", "pairs": pseudo},
        {"run": "n100", "of": "pseudo-labels", "pairs": pseudo},
        {"run": "n10", "of": "g_phi on val", "pairs": g_phi},
        {"run": "n100", "of": "g_phi on val", "pairs": g_phi},
    ]
    assert json.loads((out / "report.json").read_text())["confusions"] == saved
    md = (out / "results.md").read_text()
    assert "- n10, pseudo-labels: cat -> dog 40 %, dog -> cat 40 %, dog -> background 10 %" in md
    assert "![confusion matrices](confusion.png)" in md
    with Image.open(out / "confusion.png") as im:  # two rows (pseudo-labels, g_phi) of two panels
        assert 0.8 < im.width / im.height < 1.6 and im.width > 400


def instance_net(ap50: float, sbd: float | None, abs_dic: float | None) -> dict:
    """An instance network's figures as InstanceEvaluator.evaluate gives them (or without the CVPPP ones: None)."""
    cvppp = {} if sbd is None else {"sbd": sbd, "fbd": sbd + 0.1, "dic": -abs_dic, "abs_dic": abs_dic}
    return {"ap": ap50 / 2, "ap50": ap50, "images": len(VAL)} | cvppp


def write_instance_run(folder: Path, data_root: Path, n: int, m: int, nets: dict, wrsis: bool = False) -> None:
    cfg = {"task": "instance", "n_strong": n, "data": {"format": "voc", "root": str(data_root), "val_split": "val"}}
    cfg["model"] = {"class_inputs": wrsis}
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    hours = n * 0.1
    budget = {"budget_seconds": hours * 3600, "budget_hours": hours, "budget_days": hours / 8}
    results = {"task": "instance", "n_strong": n, "n_pseudo": m, **budget, **nets}
    (folder / "results.json").write_text(json.dumps(results))


def cells(line: str) -> list[str]:
    """A Markdown table line's cells, split at the pipes that are not escaped."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]


def test_instance_report_carries_the_cvppp_figures(tmp_path: Path):
    """Every row carries <net>_sbd, _abs_dic, _fbd and _dic beside <net>_ap50 (the reference's f_theta in the g_phi
    column); the table shows SBD in % and |DiC| per network; a run scored before the figures existed shows "-"."""
    write_val_set(tmp_path / "data")
    pseudo = instance_net(0.3, 0.6, 2.0) | {"kept_fraction": 0.9}
    write_instance_run(
        tmp_path / "sweep" / "n10",
        tmp_path / "data",
        10,
        390,
        {
            "annotation_net": instance_net(0.2, 0.7, 1.5),
            "annotation_net_long": instance_net(0.25, 0.72, 1.25),
            "segmentation_net": instance_net(0.4, 0.81, 0.5),
            "pseudo_labels": pseudo,
        },
    )
    old = {"annotation_net": instance_net(0.3, None, None), "segmentation_net": instance_net(0.5, None, None)}
    write_instance_run(tmp_path / "sweep" / "n20", tmp_path / "data", 20, 380, old | {"pseudo_labels": {}})
    write_instance_run(tmp_path / "full", tmp_path / "data", 400, 0, {"annotation_net": instance_net(0.6, 0.9, 0.25)})
    out = tmp_path / "report"
    res = report([tmp_path / "sweep" / "n10", tmp_path / "sweep" / "n20", tmp_path / "full"], out)
    new, old_row, ref = res["rows"]
    assert (new["f_theta_sbd"], new["f_theta_long_sbd"], new["g_phi_sbd"], new["pseudo_sbd"]) == (0.7, 0.72, 0.81, 0.6)
    assert (new["f_theta_abs_dic"], new["g_phi_abs_dic"], new["g_phi_dic"]) == (1.5, 0.5, -0.5)
    assert new["g_phi_fbd"] == pytest.approx(0.91) and new["f_theta_long_aug_sbd"] is None
    assert old_row["g_phi_ap50"] == 0.5 and old_row["g_phi_sbd"] is None and old_row["pseudo_abs_dic"] is None
    assert (ref["g_phi_sbd"], ref["g_phi_abs_dic"], ref["f_theta_sbd"], ref["pseudo_sbd"]) == (0.9, 0.25, None, None)

    header, _, *lines = [cells(line) for line in res["table"].splitlines()]
    cols = [
        "f_theta SBD",
        "f_theta long SBD",
        "g_phi SBD",
        r"f_theta \|DiC\|",
        r"f_theta long \|DiC\|",
        r"g_phi \|DiC\|",
    ]
    assert header[-6:] == cols and header[5] == "f_theta AP50"  # after the columns instance tables had
    assert [line[-6:] for line in lines] == [
        ["70.0", "72.0", "81.0", "1.50", "1.25", "0.50"],
        ["-"] * 6,
        ["-", "-", "90.0", "-", "-", "0.25"],
    ]
    with open(out / "results.csv") as fh:
        table = list(csv.DictReader(fh))
    assert float(table[0]["g_phi_sbd"]) == 0.81 and float(table[0]["f_theta_abs_dic"]) == 1.5
    assert float(table[0]["pseudo_dic"]) == -2.0 and table[1]["g_phi_sbd"] == ""
    assert json.loads((out / "report.json").read_text())["rows"][0]["f_theta_long_fbd"] == pytest.approx(0.82)
    assert "symmetric best Dice" in (out / "results.md").read_text()


def test_semantic_report_has_no_cvppp_columns(runs: list[Path], tmp_path: Path):
    res = report(runs, tmp_path / "report")
    assert not any("sbd" in k or "dic" in k for k in res["rows"][0])
    assert "SBD" not in res["table"] and "Dice" not in (tmp_path / "report" / "results.md").read_text()


def test_evaluate_and_compare_tables_show_sbd_and_abs_dic():
    from budgetseg.cli import evaluate_table
    from budgetseg.experiments.compare import markdown

    obj = {"annotator": instance_net(0.25, 0.6543, 1.5), "segmenter": instance_net(0.5, None, None)}
    lines = evaluate_table(obj, "instance").splitlines()
    assert cells(lines[0]) == ["network", "AP50", "SBD", r"\|DiC\|", "images"]  # GitHub shows |DiC|
    assert cells(lines[2]) == ["annotator", "0.25", "0.6543", "1.5", "6"]
    assert cells(lines[3])[2:4] == ["-", "-"]  # an eval.json from before
    semantic = evaluate_table({"annotator": net(0.5) | {"images": 6}, "segmenter": None}, "semantic").splitlines()
    assert cells(semantic[0]) == ["network", "mIoU", "images"]

    row = {"budget": "1d", "strategy": "rsis", "n_strong": 5, "n_weak": 0, "spent_days": 0.9}
    row |= {"f_theta_ap50": 0.1, "pseudo_ap50": 0.2, "g_phi_ap50": 0.3, "g_phi_ap": 0.15}
    row |= {"g_phi_sbd": 0.654, "g_phi_abs_dic": 1.25}
    skipped = {"budget": "1s", "strategy": "wrsis", "skipped": "needs at least 0.5 d"}
    head, _, full, short = [cells(x) for x in markdown([row, skipped]).splitlines()]
    assert head[-2:] == ["g_phi SBD", r"g_phi \|DiC\|"] and full[-2:] == ["65.4", "1.25"] and len(short) == len(head)
    assert head[5] == "spent (h)" and full[5] == "21.6"  # an older row: 0.9 d of 24 h
    small = cells(markdown([row | {"spent_hours": 0.1234}]).splitlines()[2])
    assert small[5] == "0.123"  # a budget of minutes stays readable


def test_training_curves_of_runs_with_the_same_folder_name(tmp_path: Path):
    """runs/a/full and runs/b/full: a picture each (curves_a_full.png, curves_b_full.png), not one over the other."""
    from budgetseg.experiments.report import run_names
    from budgetseg.trainlog import write_metrics

    write_val_set(tmp_path / "data")
    dirs = [tmp_path / "runs" / sweep / "full" for sweep in ("a", "b")]
    for d, f in zip(dirs, (0.5, 0.6), strict=True):
        write_run(d, tmp_path / "data", POOL, 0, f, None)
        write_metrics(d / "annotator" / "metrics.csv", [{"iteration": i, "loss": 1.0 / i} for i in (1, 2)])
    rep = report(dirs, tmp_path / "report")
    assert {Path(f).name for f in rep["files"]} >= {"curves_a_full.png", "curves_b_full.png"}
    assert "![training curves of b_full](curves_b_full.png)" in (tmp_path / "report" / "results.md").read_text()
    assert run_names([Path("sweep/n10"), Path("sweep/n40")]) == ["n10", "n40"]  # unique names stay as they were


def test_grid_columns_of_several_references_name_their_group(tmp_path: Path):
    write_val_set(tmp_path / "data")
    for group in ("fit", "s180"):
        write_run(tmp_path / group / "full", tmp_path / "data", POOL, 0, 0.7, None)
    runs = load_runs([tmp_path / "fit" / "full", tmp_path / "s180" / "full"])
    titles = [title for title, _ in grid_columns(make_rows(runs, "miou"), runs)]
    assert titles == [f"full sup.\nN={POOL}\nfit", f"full sup.\nN={POOL}\ns180"]


def test_previews_spread_over_the_val_set_and_the_grid_keeps_the_frames_every_run_has(tmp_path: Path):
    from budgetseg.experiments.report import preview_ids
    from budgetseg.stages import spread

    frames = [f"f{i:03d}" for i in range(101)]
    assert spread(frames, 6) == ["f000", "f020", "f040", "f060", "f080", "f100"]
    assert spread(frames[:4], 6) == frames[:4]
    assert spread(frames, 1) == ["f000"]
    old, new = tmp_path / "old", tmp_path / "new"  # an older run kept the first frames, a newer one spread frames
    for run, ids in ((old, frames[:6]), (new, spread(frames, 6))):
        for i in ids:
            write_label(run / "annotator" / "preview" / f"{i}.png", truth(0))
    runs = [{"dir": old}, {"dir": new}]
    assert preview_ids(runs, None, 4) == ["f000", "f001", "f002", "f003"]  # the frame both kept first
    assert preview_ids(runs[1:], None, 4) == ["f000", "f020", "f040", "f060"]


def test_wrsis_runs_say_that_their_f_theta_is_given_the_counts(tmp_path: Path):
    """A W-RSIS run's f_theta is scored with the val images' IL+C labels given: its row, legend and explanation say
    so; a plain RSIS run's do not."""
    write_val_set(tmp_path / "data")
    nets = {"annotation_net": instance_net(0.3, 0.6, 1.0), "segmentation_net": instance_net(0.4, 0.7, 1.0)}
    write_instance_run(tmp_path / "rsis" / "n10", tmp_path / "data", 10, 390, nets)
    plain = report([tmp_path / "rsis" / "n10"], tmp_path / "plain", grid_images=0)
    write_instance_run(tmp_path / "wrsis" / "n10", tmp_path / "data", 10, 390, nets, wrsis=True)
    both = report([tmp_path / "rsis" / "n10", tmp_path / "wrsis" / "n10"], tmp_path / "both", grid_images=0)
    assert [r["weak_given"] for r in both["rows"]] == [False, True] and not plain["rows"][0]["weak_given"]
    assert "given each val image's IL+C labels" in (tmp_path / "both" / "results.md").read_text()
    assert "IL+C" not in (tmp_path / "plain" / "results.md").read_text()
    legend = [t.get_text() for t in plot_budget(both["rows"], "ap50", "AP50", None).axes[0].get_legend().get_texts()]
    assert any("given val's IL+C" in t for t in legend) and any("N strong only" in t for t in legend)


def test_a_run_that_was_not_scored_is_reported_without_scores(runs: list[Path], tmp_path: Path):
    """data.val_split null: results.json holds no network's figures; the report shows '-' for them and still plots
    the others (it stopped on an empty max())."""
    unscored = tmp_path / "mine" / "n0030"
    write_run(unscored, tmp_path / "data", 30, POOL - 30, 0.4, 0.45)
    results = json.loads((unscored / "results.json").read_text())
    results |= {"annotation_net": None, "segmentation_net": None, "annotation_net_long": None, "pseudo_labels": None}
    (unscored / "results.json").write_text(json.dumps(results))
    res = report([*runs[:3], unscored], tmp_path / "out")
    row = next(line for line in res["table"].splitlines() if "n0030" in line)
    assert [c.strip() for c in row.strip("|").split("|")][5:8] == ["-", "-", "-"]
    assert (tmp_path / "out" / "report.json").is_file()
