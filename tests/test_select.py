"""`budgetseg select`: which images to label."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fixtures_data import write_jpeg, write_voc
from PIL import Image

from budgetseg.cli import main
from budgetseg.data.pool import ImageFolder
from budgetseg.loop.select import encoder_features, k_center_greedy, select
from budgetseg.splits import make_split


def test_k_center_greedy_covers_every_cluster():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], float)
    feats = np.concatenate([c + rng.normal(0, 0.1, (25, 2)) for c in centres])
    for seed in range(5):
        chosen = k_center_greedy(feats, 4, seed)
        assert sorted(k // 25 for k in chosen) == [0, 1, 2, 3]  # one per cluster, whatever the first centre
    assert k_center_greedy(feats, 10, 1)[:4] == k_center_greedy(feats, 4, 1)  # nested across n


def test_random_selection_is_the_simulations_split(tmp_path):
    for i in range(12):
        write_jpeg(tmp_path / f"im{i:02d}.jpg", 5, 6)
    ds = ImageFolder(tmp_path)
    for seed in (0, 3):
        assert sorted(select(ds, 5, "random", seed)) == make_split(ds.ids, 5, seed).strong


def photos(folder, n=8):
    """Two kinds of photo: dark noise and bright stripes, of several sizes."""
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        h, w = 40 + 7 * i, 64 - 3 * i
        if i % 2:
            im = (rng.random((h, w, 3)) * 60).astype(np.uint8)
        else:
            im = np.zeros((h, w, 3), np.uint8)
            im[:, ::6] = (250, 240, 30)
            im += 150
        Image.fromarray(im).save(folder / f"p{i}.png")


def test_diverse_selection_picks_both_kinds_of_photo(tmp_path):
    photos(tmp_path / "photos")
    ds = ImageFolder(tmp_path / "photos")
    feats = encoder_features(ds, ds.ids, progress=False)
    assert feats.shape == (8, 320) and np.allclose(np.linalg.norm(feats, axis=1), 1, atol=1e-5)
    picked = select(ds, 2, "diverse", seed=0)
    assert {int(i[1:]) % 2 for i in picked} == {0, 1}


def test_select_cli_copies_and_writes_ids(tmp_path, capsys):
    photos(tmp_path / "photos")
    out, copy = tmp_path / "ids.txt", tmp_path / "to_label"
    args = ["select", "--images", str(tmp_path / "photos"), "--n", "3", "--strategy", "random", "--seed", "2"]
    assert main([*args, "--out", str(out), "--copy", str(copy), "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    ids = out.read_text().split()
    assert obj["ids"] == ids and len(ids) == 3 and obj["pool"] == 8
    assert sorted(p.name for p in copy.iterdir()) == sorted(f"{i}.png" for i in ids)
    # the copy folder is never overwritten, and a refused call writes no ids file
    assert main([*args, "--out", str(tmp_path / "again.txt"), "--copy", str(copy)]) == 2
    assert "to_label: exists and is not an empty folder" in capsys.readouterr().err
    assert not (tmp_path / "again.txt").exists()


def test_select_cli_budget_from_measured_or_preset_statistics(tmp_path, capsys):
    write_voc(tmp_path / "voc")
    # the VOC fixture: 1 class and 4/3 objects per image on average, C = 20: full = 19 + 79 * 4/3 s
    args = ["select", "--format", "voc", "--root", str(tmp_path / "voc"), "--strategy", "random"]
    assert main([*args, "--budget", "250s", "--out", str(tmp_path / "a.txt"), "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["n"] == 2 and obj["seconds_per_full_image"] == pytest.approx(19 + 79 * 4 / 3)
    assert "measured on 3" in obj["statistics_from"]
    photos(tmp_path / "photos")
    args = ["select", "--images", str(tmp_path / "photos"), "--strategy", "random", "--budget", "0.2h", "--json"]
    assert main([*args, "--out", str(tmp_path / "b.txt")]) == 0  # 720 s at VOC's 239.7 s per image
    obj = json.loads(capsys.readouterr().out)
    assert obj["n"] == 3 and obj["statistics_from"].startswith("preset voc")
    assert main([*args, "--mask-s", "30", "--out", str(tmp_path / "c.txt")]) == 0  # 18.5 + 2.8 * 30 = 102.5 s
    assert json.loads(capsys.readouterr().out)["n"] == 7


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--n", "3", "--budget", "1h"], "exactly one of --n N or --budget"),
        (["--n", "99"], "cannot select 99 images: the pool holds 8"),
        (["--budget", "1s"], "buys no fully labelled image"),
    ],
)
def test_select_cli_errors_are_one_line(tmp_path, capsys, extra, message):
    photos(tmp_path / "photos")
    assert main(["select", "--images", str(tmp_path / "photos"), *extra, "--out", str(tmp_path / "x.txt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err and not (tmp_path / "x.txt").exists()
    assert main(["select", "--images", str(tmp_path / "nope"), "--n", "1", "--out", str(tmp_path / "x.txt")]) == 2
    assert "nope: image folder is missing" in capsys.readouterr().err


def test_select_splits_a_budget_between_masks_and_boxes_in_one_order(tmp_path, capsys):
    from budgetseg.cost import VOC_STATS, CostModel, box_counts

    photos(tmp_path / "photos")
    masks, boxes = tmp_path / "masks.txt", tmp_path / "boxes.txt"
    base = ["select", "--images", str(tmp_path / "photos"), "--strategy", "diverse", "--json"]
    mix = ["--budget", "0.25h", "--boxes-out", str(boxes), "--mix-share", "0.5"]
    assert main([*base, *mix, "--out", str(masks)]) == 0
    obj = json.loads(capsys.readouterr().out)
    spi = CostModel().seconds_per_image(VOC_STATS)
    n_full, n_box = box_counts(900.0, 8, spi, 0.5)  # 450 s buys 1 mask (239.7 s), the rest 8 - 1 box images
    assert (obj["n"], obj["n_boxes"]) == (n_full, n_box) == (1, 7)
    ids, boxed = masks.read_text().split(), boxes.read_text().split()
    assert obj["ids"] == ids and obj["box_ids"] == boxed and not set(ids) & set(boxed)
    assert main([*base, "--n", "8", "--out", str(tmp_path / "all.txt")]) == 0  # the same diverse order, cut
    capsys.readouterr()
    assert (tmp_path / "all.txt").read_text().split() == ids + boxed
    bad = [
        (["--n", "3", "--boxes-out", str(tmp_path / "b1.txt")], "give --budget"),
        (["--budget", "1h", "--boxes-out", str(tmp_path / "b2.txt"), "--mix-share", "1"], "--mix-share"),
        (["--budget", "60s", "--boxes-out", str(tmp_path / "b3.txt")], "buys no mask"),
        (["--budget", "1h", "--boxes-out", str(tmp_path / "x.txt")], "name the same file"),
    ]
    for extra, message in bad:
        assert main([*base, *extra, "--out", str(tmp_path / "x.txt")]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and err.count("\n") == 0 and not (tmp_path / "x.txt").exists()
