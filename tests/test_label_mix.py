"""data.labels: the simulation's mix of label types (full masks, boxes, image-level tags) drawn from a labelled
pool, trained on (boxes through their mask estimates, tags restricting pseudo-labels) and priced per type."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from test_pipeline import TINY

from budgetseg.config import load_config
from budgetseg.data.boxmask import boxes_only, component_objects
from budgetseg.data.pool import BoxMasked, SimulatedBoxes
from budgetseg.data.readers import open_dataset
from budgetseg.data.sample import IGNORE, Sample, read_label_png
from budgetseg.errors import BudgetsegError
from budgetseg.pipeline import run
from budgetseg.semantic.task import restrict_to_image_labels
from budgetseg.splits import Split, check_split, make_mix_split, make_split, read_split, write_split

POOL = [f"img{i:02d}" for i in range(30)]


def test_mix_split_cuts_one_seeded_order_into_full_boxes_tags_and_rest():
    s = make_mix_split(POOL, 5, 8, 6, seed=3)
    full = sorted(set(s.strong) - set(s.boxes))
    assert (len(full), len(s.boxes), len(s.tags), len(s.unlabeled)) == (5, 8, 6, 17)
    assert set(s.boxes) <= set(s.strong) and set(s.tags) <= set(s.unlabeled)
    # the full images are make_split's N = 5, and the strong ones (full + boxes) its N = 13: one order, nested
    assert full == make_split(POOL, 5, seed=3).strong and s.strong == make_split(POOL, 13, seed=3).strong
    more = make_mix_split(POOL, 5, 10, 0, seed=3)
    assert set(s.boxes) < set(more.boxes)  # more boxes at the same N keep the earlier box images
    with pytest.raises(BudgetsegError, match="pool holds 30"):
        make_mix_split(POOL, 10, 15, 6)


def test_split_folder_keeps_boxes_and_tags_and_refuses_strays(tmp_path):
    s = make_mix_split(POOL, 2, 3, 4, seed=0)
    write_split(tmp_path / "split", s)
    assert read_split(tmp_path / "split") == s
    plain = make_split(POOL, 4)
    write_split(tmp_path / "plain", plain)
    assert not (tmp_path / "plain" / "boxes.txt").exists() and read_split(tmp_path / "plain") == plain
    with pytest.raises(BudgetsegError, match="boxes.txt.*not strong"):
        check_split(Split(s.strong, s.unlabeled, boxes=[s.unlabeled[0]]), tmp_path / "x")
    with pytest.raises(BudgetsegError, match="tags.txt.*not unlabeled"):
        check_split(Split(s.strong, s.unlabeled, tags=[s.strong[0]]), tmp_path / "x")


def test_config_labels_full_is_n_strong_and_mixes_are_checked():
    cfg = load_config(None, ["data.labels.full=5", "data.labels.boxes=20"])
    assert cfg.n_strong == 5 and cfg.data.labels.full is None and cfg.data.labels.boxes == 20
    with pytest.raises(BudgetsegError, match="data.labels.tags is semantic only"):
        load_config("configs/fashion_instance.yaml", ["data.labels.tags=3"])
    with pytest.raises(BudgetsegError, match="need data.strong random"):
        load_config(None, ["data.labels.boxes=3", "data.strong=auto"])
    with pytest.raises(BudgetsegError, match="set one"):
        load_config(None, ["data.labels.tags=3", "pseudo.image_labels=true"])


def test_component_objects_and_boxes_only_on_labels_without_instances():
    semantic = np.zeros((10, 12), np.uint8)
    semantic[1:3, 1:4] = 2  # two separate regions of class 2, one of class 1, a void patch
    semantic[6:9, 8:11] = 2
    semantic[5, 2:6] = 1
    semantic[0, 11] = IGNORE
    masks, classes = component_objects(semantic, first=1)
    assert sorted(classes.tolist()) == [1, 2, 2] and masks.sum() == 6 + 9 + 4
    sample = Sample("a", np.zeros((10, 12, 3), np.uint8), semantic, np.zeros((0, 10, 12), bool), np.zeros(0, np.int64))
    boxed = boxes_only(sample, first=1)
    assert sorted(map(tuple, boxed.boxes.tolist())) == [(1, 1, 4, 3), (2, 5, 6, 6), (8, 6, 11, 9)]
    assert (boxed.semantic[semantic > 0] == IGNORE).all() and (boxed.semantic[semantic == 0] == 0).all()
    assert boxed.void[0, 11] and boxed.void.sum() == 1  # ignored by the labels: stays ignored once estimated
    # a label set without background (first 0): class 0's regions are boxed too
    assert len(boxes_only(sample, first=0).boxes) == 3 + 1


def test_restriction_leaves_an_untagged_image_alone():
    probs = torch.tensor([[0.1, 0.6, 0.3], [0.2, 0.5, 0.3]])[:, :, None, None]
    out = restrict_to_image_labels(probs, [{2: 1}, None])
    np.testing.assert_allclose(out[0, :, 0, 0], [0.25, 0.0, 0.75], rtol=1e-6)
    np.testing.assert_allclose(out[1, :, 0, 0], [0.2, 0.5, 0.3], rtol=1e-6)


def test_simulated_boxes_become_estimated_masks_close_to_the_truth(tiny_data, tmp_path):
    pool = open_dataset("voc", tiny_data, "train")
    ids = list(pool.ids)[:3]
    boxed = BoxMasked(SimulatedBoxes(pool, ids[:2]), tmp_path / "box_masks")
    for i in ids[:2]:
        truth, est = pool.load(i), boxed.load(i)
        sure = est.semantic != IGNORE
        assert len(est.boxes) == 0 and est.semantic[~sure].size > 0  # estimated, with an unsure band
        assert (est.semantic[sure] == truth.semantic[sure]).mean() > 0.9
    assert sorted(p.stem for p in (tmp_path / "box_masks").iterdir()) == sorted(ids[:2])
    np.testing.assert_array_equal(boxed.load(ids[2]).semantic, pool.load(ids[2]).semantic)  # not boxed: as it was


def test_filled_boxes_instead_of_grabcut_and_the_annotator_key_tells_them_apart(tiny_data, tmp_path):
    from budgetseg.config import BOX_MASKS
    from budgetseg.data.boxmask import ESTIMATES, boxes_of
    from budgetseg.stages import annotator_key

    assert set(BOX_MASKS) == set(ESTIMATES)
    pool = open_dataset("voc", tiny_data, "train")
    i = list(pool.ids)[0]
    filled = BoxMasked(SimulatedBoxes(pool, [i]), tmp_path / "filled", "box").load(i)
    truth = pool.load(i)
    boxes = boxes_of(truth.instance_masks)
    assert (filled.semantic != IGNORE).all()  # a filled box is sure everywhere
    for k, (x0, y0, x1, y1) in enumerate(boxes):  # each object's estimate is its box, where no smaller box lies on top
        assert filled.instance_masks[k][y0:y1, x0:x1].mean() > 0.5 and not filled.instance_masks[k][:y0].any()
    assert filled.instance_masks.sum() > truth.instance_masks.sum()  # boxes hold more than their objects
    grabcut = BoxMasked(SimulatedBoxes(pool, [i]), tmp_path / "grabcut").load(i)
    assert (grabcut.semantic == IGNORE).any()  # GrabCut leaves an unsure band
    cfg = load_config(None, [f"data.root={tiny_data}", "data.labels.boxes=2"])
    keys = {
        annotator_key(replace(cfg, data=replace(cfg.data, labels=replace(cfg.data.labels, **kw))), ["a"], ["b"])
        for kw in ({}, {"box_masks": "box"}, {"box_classes": ["shirt"]})
    }
    assert len(keys) == 3  # another estimate or other boxed classes: another f_theta
    assert annotator_key(cfg, ["a"]) == annotator_key(
        replace(cfg, data=replace(cfg.data, labels=replace(cfg.data.labels, box_masks="box"))), ["a"]
    )  # no box images: the method changes nothing
    with pytest.raises(BudgetsegError, match="box_masks: one of grabcut, box, inner"):
        load_config(None, [f"data.root={tiny_data}", "data.labels.box_masks=polygon"])


@pytest.mark.slow
def test_a_mixed_run_trains_on_box_masks_restricts_tagged_pseudo_labels_and_prices_each_type(tiny_data, tmp_path):
    over = [f"data.root={tiny_data}", *TINY, "controls=false", "data.labels.full=3"]
    over += ["data.labels.boxes=5", "data.labels.tags=6"]
    out = tmp_path / "mix"
    results = run(load_config(None, over), out)
    split = read_split(out / "split")
    assert (len(split.strong), len(split.boxes), len(split.tags), len(split.unlabeled)) == (8, 5, 6, 16)
    assert sorted(p.stem for p in (out / "box_masks").glob("*.npz")) == split.boxes  # f_theta trained on them
    cost = json.loads((out / "cost.json").read_text())
    spi, labels = cost["seconds_per_image"], cost["labels"]
    assert {k: v["images"] for k, v in labels.items()} == {"full": 3, "boxes": 5, "tags": 6}
    assert cost["strong_labels"]["seconds"] == pytest.approx(3 * spi["full"] + 5 * spi["bb"])
    assert cost["weak_labels"]["seconds"] == pytest.approx(6 * spi["il"]) and cost["n_weak"] == 6
    assert results["budget_seconds"] == pytest.approx(3 * spi["full"] + 5 * spi["bb"] + 6 * spi["il"])
    pool = open_dataset("voc", tiny_data, "train")
    from budgetseg.loop.export import export_run

    export_run(out, "cvat", tmp_path / "exported")  # the box images as training saw them: their estimates
    exported = open_dataset("voc", tmp_path / "exported", "default")
    trained = BoxMasked(SimulatedBoxes(open_dataset("voc", tiny_data, "train"), split.boxes), out / "box_masks")
    for i in split.boxes[:2]:
        np.testing.assert_array_equal(exported.load(i).semantic, trained.load(i).semantic)
    outside = {True: 0, False: 0}  # pixels of a class the image does not hold, tagged or not
    for i in split.unlabeled:
        allowed = {0, *np.unique(pool.load(i, with_image=False).instance_classes).tolist()}
        raw = read_label_png(out / "pseudo" / "raw" / f"{i}.png")
        outside[i in split.tags] += int(np.isin(raw, list(allowed), invert=True).sum())
    assert outside[True] == 0 and outside[False] > 0


SPI = {"il": 10.0, "ilc": 12.0, "bb": 30.0, "full": 200.0}


def test_each_strategy_buys_what_its_rule_says_and_is_priced_per_image_so():
    from budgetseg.experiments.compare import counts_of, needs, unit_seconds

    assert counts_of(1000.0, 50, SPI, "masks") == (5, 0)
    assert counts_of(1000.0, 50, SPI, "boxes") == (0, 33)
    assert counts_of(1000.0, 20, SPI, "boxes") == (0, 20)  # no more images than the pool holds
    assert counts_of(1000.0, 50, SPI, "mix") == (1, 26)  # 250 s buys 1 mask, the other 800 s 26 boxes
    assert counts_of(700.0, 50, SPI, "mix") is None  # a quarter of it buys no mask: that would be boxes alone
    assert counts_of(1000.0, 50, SPI, "tags") == (2, 0)  # 2 * 200 + 48 * 10 = 880 <= 1000 < 3 * 200 + 47 * 10
    # the mix's price per image: the images its budget buys, before rounding
    b = 1e6
    n_full, n_box = counts_of(b, 10**5, SPI, "mix")
    assert b / unit_seconds("mix", SPI) == pytest.approx(n_full + n_box, abs=2)
    assert unit_seconds("boxes", SPI) == 30.0 and unit_seconds("masks", SPI) == 200.0
    for s in ("masks", "tags", "boxes", "mix"):  # the smallest budget a strategy runs on, and just below it
        assert counts_of(needs(s, 50, SPI), 50, SPI, s) is not None
        assert counts_of(needs(s, 50, SPI) - 1.0, 50, SPI, s) is None


def test_advise_reads_the_mixes_of_a_compare_json_and_prices_them_by_their_rule(tmp_path, capsys):
    from budgetseg.cli import main
    from budgetseg.experiments.compare import counts_of

    truths = {"masks": (0.6, 1.5, 0.5), "boxes": (0.5, 1.2, 0.5), "mix": (0.58, 1.3, 0.5)}
    rows = []
    for days in (0.2, 0.4, 0.8, 1.6):
        for s, (a, b, c) in truths.items():
            n_full, n_box = counts_of(days * 86400, 2000, SPI, s)
            n = n_full + n_box
            rows.append({"budget": f"{days}d", "strategy": s, "n_strong": n, "g_phi_miou": a - b * n**-c})
    src = tmp_path / "compare.json"
    obj = {"task": "semantic", "metric": "miou", "mix_share": 0.25, "seconds_per_image": SPI, "pool": 2000}
    src.write_text(json.dumps(obj | {"rows": rows}))
    assert main(["advise", str(src), "--budget", "1d", "--json"]) == 0
    adv = json.loads(capsys.readouterr().out)
    assert adv["task"] == "semantic" and set(adv["strategies"]) == set(truths)
    predicted = {}
    for s, (a, b, c) in truths.items():
        n = adv["strategies"][s]["n_strong"]
        n_full, n_box = counts_of(86400, 2000, SPI, s)
        assert abs(n - (n_full + n_box)) <= 2  # a day buys, by the strategy's own price per image
        predicted[s] = a - b * n**-c
        assert adv["strategies"][s]["predicted"] == pytest.approx(predicted[s], abs=0.01)
    assert adv["recommended"] == max(predicted, key=predicted.get)


@pytest.mark.slow
def test_compare_runs_the_semantic_strategies_at_equal_budgets(tiny_data, tmp_path):
    from budgetseg.experiments.compare import compare

    cfg = load_config(None, [f"data.root={tiny_data}", *TINY, "controls=false", "cost.box_s=14"])
    out = tmp_path / "cmp"
    rows = compare(cfg, ["600s"], out, ("masks", "boxes", "mix"), share=0.5)
    by = {r["strategy"]: r for r in rows}
    spi = json.loads((out / "compare.json").read_text())["seconds_per_image"]
    assert spi == json.loads((out / "600s-boxes" / "cost.json").read_text())["seconds_per_image"]  # the config's
    assert by["masks"]["n_full"] == int(600 // spi["full"]) and by["masks"]["n_boxes"] == 0
    assert (by["boxes"]["n_full"], by["boxes"]["n_boxes"]) == (0, int(600 // spi["bb"])) and by["boxes"]["n_boxes"] < 24
    assert by["mix"]["n_full"] == int(300 // spi["full"]) >= 1 and by["mix"]["n_boxes"] >= 1
    for s, r in by.items():
        assert r["spent_days"] <= r["budget_days"] + 1e-9 and 0 <= r["g_phi_miou"] <= 1
        assert r["final_miou"] == r["g_phi_miou"]  # images were left to pseudo-label
        split = read_split(out / f"600s-{s}" / "split")
        assert len(split.boxes) == r["n_boxes"] and len(split.strong) == r["n_strong"]
    md = (out / "compare.md").read_text()
    assert "masks + boxes" in md and "g_phi mIoU" in md and (out / "compare_miou.png").stat().st_size > 10_000


def test_a_strategy_that_labelled_the_whole_pool_deploys_f_theta():
    from budgetseg.experiments.compare import _figures

    res = {"n_pseudo": 0, "budget_days": 0.1, "annotation_net": {"miou": 0.3}, "segmentation_net": None}
    assert _figures(res, "miou")["final_miou"] == 0.3
    res |= {"n_pseudo": 5, "segmentation_net": {"miou": 0.4}}
    assert _figures(res, "miou")["final_miou"] == 0.4


def test_plan_shows_the_box_mixes_a_budget_buys(capsys):
    from budgetseg.cli import main
    from budgetseg.cost import box_counts

    assert main(["plan", "--budget", "0.2d", "--pool", "500", "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    spi, mixes = obj["seconds_per_image"], obj["box_mixes"]
    assert mixes["boxes"] == {"n_full": 0, "n_boxes": min(500, int(0.2 * 86400 // spi["bb"]))}
    n_full = mixes["mix"]["n_full"]
    assert n_full == int(0.25 * 0.2 * 86400 // spi["full"]) and (n_full, mixes["mix"]["n_boxes"]) == box_counts(
        0.2 * 86400, 500, spi, 0.25
    )
    assert n_full * spi["full"] + mixes["mix"]["n_boxes"] * spi["bb"] <= 0.2 * 86400
    assert main(["plan", "--budget", "10s", "--pool", "500", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["box_mixes"]["mix"] == {"n_full": None, "n_boxes": None}


def write_tags(path, labels: dict[str, dict[int, int]], names: list[str]) -> None:
    rows = ["image_id,class,count"] + [f"{i},{names[c]},{n}" for i, cs in labels.items() for c, n in cs.items()]
    path.write_text("\n".join(rows) + "\n")


@pytest.mark.slow
def test_a_tag_file_for_some_images_tags_those_alone_and_one_naming_no_image_is_refused(tiny_data, tmp_path):
    from budgetseg.weak import from_dataset

    pool = open_dataset("voc", tiny_data, "train")
    ids = sorted(pool.ids)
    base = [f"data.root={tiny_data}", *TINY, "controls=false", "pseudo.image_labels=true"]
    bad = tmp_path / "bad.csv"
    write_tags(bad, {"nosuch": {1: 1}} | from_dataset(pool, ids[:2]), pool.class_names)
    with pytest.raises(BudgetsegError, match=r"bad.csv: names no image of the dataset: 'nosuch'"):
        run(load_config(None, [*base, f"data.weak_labels={bad}"]), tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    tags = tmp_path / "tags.csv"
    write_tags(tags, from_dataset(pool, ids[:12]), pool.class_names)  # 12 of the 24, strong ones among them
    out = tmp_path / "partial"
    run(load_config(None, [*base, f"data.weak_labels={tags}"]), out, until="pseudo")
    split = read_split(out / "split")
    assert split.tags == [i for i in split.unlabeled if i in ids[:12]] and 0 < len(split.tags) < len(split.unlabeled)
    cost = json.loads((out / "cost.json").read_text())
    assert cost["labels"]["tags"]["images"] == cost["n_weak"] == len(split.tags)
    assert cost["weak_labels"]["seconds"] == pytest.approx(len(split.tags) * cost["seconds_per_image"]["il"])
    outside = {True: 0, False: 0}
    for i in split.unlabeled:
        allowed = {0, *np.unique(pool.load(i, with_image=False).instance_classes).tolist()}
        raw = read_label_png(out / "pseudo" / "raw" / f"{i}.png")
        outside[i in split.tags] += int(np.isin(raw, list(allowed), invert=True).sum())
    assert outside[True] == 0 and outside[False] > 0


def test_id_files_per_label_type_as_select_writes_them(tiny_data, tmp_path):
    pool = open_dataset("voc", tiny_data, "train")
    ids = sorted(pool.ids)
    masks, boxes = tmp_path / "to_mask.txt", tmp_path / "to_box.txt"
    masks.write_text("\n".join(ids[:3]) + "\n")
    boxes.write_text("\n".join(ids[3:8]) + "\n")
    base = [f"data.root={tiny_data}", *TINY, "controls=false", f"data.strong={masks}"]
    out = tmp_path / "files"
    run(load_config(None, [*base, f"data.labels.boxes_file={boxes}"]), out, until="annotator")
    split = read_split(out / "split")
    assert split.strong == ids[:8] and split.boxes == ids[3:8] and len(split.unlabeled) == 16
    cost = json.loads((out / "cost.json").read_text())
    assert {k: v["images"] for k, v in cost["labels"].items()} == {"full": 3, "boxes": 5}
    assert sorted(p.stem for p in (out / "box_masks").glob("*.npz")) == split.boxes
    boxes.write_text(f"{ids[2]}\n{ids[4]}\n")
    with pytest.raises(BudgetsegError, match=r"to_box.txt: 1 id\(s\) are in data.strong's file to_mask.txt too"):
        run(load_config(None, [*base, f"data.labels.boxes_file={boxes}"]), tmp_path / "overlap")
    boxes.write_text("nosuch\n")
    with pytest.raises(BudgetsegError, match="to_box.txt: 1 id.* not in the pool"):
        run(load_config(None, [*base, f"data.labels.boxes_file={boxes}"]), tmp_path / "unknown")
    assert not (tmp_path / "overlap").exists() and not (tmp_path / "unknown").exists()
    with pytest.raises(BudgetsegError, match="set data.strong to that file"):
        load_config(None, [f"data.labels.boxes_file={boxes}"])


def test_box_estimates_leave_the_unclaimed_part_of_a_box_unsure_without_a_background():
    from budgetseg.data.boxmask import FG, box_labels

    def corner(image, box, opts):  # an estimator that claims the box's first pixel only
        out = np.zeros(image.shape[:2], np.uint8)
        out[box[1], box[0]] = FG
        return out

    image, boxes, classes = np.zeros((6, 6, 3), np.uint8), np.array([[1, 1, 4, 4]]), np.array([0])
    with_bg, _, _ = box_labels(image, boxes, classes, estimate=corner)
    dense, masks, _ = box_labels(image, boxes, classes, estimate=corner, background=False)
    assert (with_bg == 0).all()  # the background where the label set has one
    assert dense[1, 1] == 0 and (dense == IGNORE).sum() == 35  # class 0 is a class: the rest is unknown, not it
    assert masks.sum() == 1


def test_review_fixes_floor_cache_key_and_existing_boxes(tmp_path):
    from budgetseg.cost import box_counts
    from budgetseg.experiments.advise import run_pricing
    from budgetseg.experiments.compare import compare
    from budgetseg.stages import annotator_key

    assert box_counts(100, 50, {"full": 29, "bb": 5}, 0.29) == (1, 14)  # 0.29 * 100 / 29 is 0.99999...
    assert box_counts(1000, 4, {"full": 100, "bb": 5}, 0.9) == (4, 0)  # masks on the whole pool
    cfg = load_config(None, [])
    assert (
        annotator_key(cfg, ["a", "b"]) != annotator_key(cfg, ["a", "b"], ["b"]) != annotator_key(cfg, ["a", "b"], ["a"])
    )
    tagged = load_config(None, ["data.labels.tags=5"])  # tags f_theta never sees: one f_theta for both
    assert annotator_key(tagged, ["a"]) == annotator_key(cfg, ["a"])
    with pytest.raises(BudgetsegError, match="needs data.strong random"):
        compare(load_config(None, ["data.strong=ids.txt"]), ["1d"], tmp_path / "c")
    # a run of 3 masks + 5 box images + 6 tags is a mix, priced per strong image at what it paid
    cost = {"seconds_per_image": SPI, "labels": {"full": {"images": 3, "seconds": 600.0}}}
    cost["labels"] |= {"boxes": {"images": 5, "seconds": 150.0}, "tags": {"images": 6, "seconds": 60.0}}
    key, pricing = run_pricing("semantic", cost, 8, 6, 16, 810.0)
    assert key == "mix" and pricing.full_s == pytest.approx(750 / 8) and pricing.weak_s == pytest.approx(10.0)
    assert run_pricing("semantic", {"seconds_per_image": SPI}, 8, 16, 16, 8 * 200 + 16 * 10.0)[0] == "tags"
    # boxes_only keeps the boxes a sample already had
    sem = np.zeros((8, 8), np.uint8)
    sem[1:3, 1:3] = 1
    sem[5:7, 5:7] = IGNORE  # inside a box the reader gave
    had = Sample("a", np.zeros((8, 8, 3), np.uint8), sem, np.zeros((0, 8, 8), bool), np.zeros(0, np.int64))
    had = replace(had, boxes=np.array([[5, 5, 7, 7]]), box_classes=np.array([2]))
    out = boxes_only(had, first=1)
    assert out.box_classes.tolist() == [2, 1] and out.boxes.tolist() == [[5, 5, 7, 7], [1, 1, 3, 3]]
    assert not out.void[5:7, 5:7].any()  # its own box is to be estimated, not void


@pytest.mark.slow
def test_tags_for_photos_without_labels_beside_a_labelled_pool(tiny_data, tmp_path):
    import shutil

    pool = open_dataset("voc", tiny_data, "train")
    ids = sorted(pool.ids)
    photos = tmp_path / "photos"
    photos.mkdir()
    for k, i in enumerate(sorted(open_dataset("voc", tiny_data, "val").ids)[:3]):
        shutil.copy(tiny_data / "JPEGImages" / f"{i}.jpg", photos / f"photo{k}.jpg")
    strong = tmp_path / "strong.txt"
    strong.write_text("\n".join(ids[:8]) + "\n")
    tags = tmp_path / "tags.csv"
    write_tags(tags, {"photo0": {2: 1}, ids[9]: {1: 1}}, pool.class_names)
    over = [f"data.root={tiny_data}", *TINY, "controls=false", "pseudo.image_labels=true", f"data.strong={strong}"]
    over += [f"data.unlabeled={photos}", f"data.weak_labels={tags}"]
    out = tmp_path / "run"
    run(load_config(None, over), out, until="pseudo")
    split = read_split(out / "split")
    assert split.tags == sorted(["photo0", ids[9]]) and "photo1" in split.unlabeled
    raw = read_label_png(out / "pseudo" / "raw" / "photo0.png")
    assert set(np.unique(raw).tolist()) <= {0, 2, IGNORE}  # the photo's tag: class 2 or background


def test_boxes_for_some_classes_leave_the_others_unknown_and_are_priced_for_them(tiny_data, tmp_path):
    pool = open_dataset("voc", tiny_data, "train")
    names = pool.class_names
    over = [f"data.root={tiny_data}", *TINY, "controls=false", "data.labels.full=2", "data.labels.boxes=4"]
    out = tmp_path / "some"
    run(load_config(None, [*over, f"data.labels.box_classes=[{names[1]}, {names[2]}]"]), out, until="annotator")
    split = read_split(out / "split")
    boxed = SimulatedBoxes(pool, split.boxes, [names[1], names[2]])
    for i in split.boxes:
        truth, b = pool.load(i), boxed.load(i)
        assert set(b.box_classes.tolist()) <= {1, 2}
        others = np.isin(truth.semantic, [1, 2, 0, IGNORE], invert=True)
        assert (b.semantic[others] == IGNORE).all()  # classes not boxed: unknown, not background
    cost = json.loads((out / "cost.json").read_text())
    stats = cost["statistics"]
    from budgetseg.data.stats import dataset_stats

    measured = dataset_stats(pool)
    sub = measured.of_classes([names[1], names[2]])
    assert sub.classes == 2 and sub.objects_per_image < measured.objects_per_image == pytest.approx(
        stats["objects_per_image"]
    )
    expected = (2 - sub.classes_per_image) * 1.0 + sub.objects_per_image * 7.0
    assert cost["seconds_per_image"]["bb"] == pytest.approx(expected, abs=1e-5)
    assert cost["labels"]["boxes"]["seconds"] == pytest.approx(4 * expected, abs=1e-4)
    with pytest.raises(BudgetsegError, match="data.labels.box_classes: unknown class 'zebra'"):
        run(load_config(None, [*over, "data.labels.box_classes=[zebra]"]), tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_compare_strategies_keep_the_box_classes_and_nothing_else_of_the_mix():
    from budgetseg.experiments.compare import strategy_config

    cfg = load_config(None, ["data.labels.box_classes=[a, b]", "data.labels.boxes=7", "data.labels.tags=3"])
    boxes = strategy_config(cfg, "1d", "boxes", (0, 5))
    assert (boxes.n_strong, boxes.budget, boxes.data.labels.boxes, boxes.data.labels.tags) == (0, None, 5, 0)
    assert boxes.data.labels.box_classes == ["a", "b"]
    masks = strategy_config(cfg, "1d", "masks", (4, 0))
    assert (masks.n_strong, masks.budget, masks.data.labels.boxes, masks.data.labels.tags) == (None, "1d", 0, 0)


def test_compare_gives_a_weak_label_file_only_to_the_strategies_that_read_it():
    """data.weak_labels (counts or tags of the pool) reaches W-RSIS and tags; RSIS and masks read none, and a config
    that names one for them is refused (config.validate)."""
    from budgetseg.config import validate
    from budgetseg.experiments.compare import strategy_config

    inst = load_config("configs/fashion_instance.yaml", ["model.class_inputs=true", "data.weak_labels=counts.csv"])
    sem = load_config(None, ["pseudo.image_labels=true", "data.weak_labels=tags.csv"])
    for cfg, reads, not_read in ((inst, "wrsis", "rsis"), (sem, "tags", "masks")):
        assert strategy_config(cfg, "1d", reads).data.weak_labels == cfg.data.weak_labels
        other = strategy_config(cfg, "1d", not_read)
        assert other.data.weak_labels is None
        validate(other)  # refused before: data.weak_labels without the option that reads it
