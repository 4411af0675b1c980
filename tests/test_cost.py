import json

import pytest
from fixtures_data import write_voc

from budgetseg.cli import main
from budgetseg.cost import (
    VOC_STATS,
    CostModel,
    LabelStats,
    max_strong,
    parse_budget,
    plan_budget,
    plan_cost,
)
from budgetseg.errors import BudgetsegError


def test_paper_numbers_for_pascal_voc():
    spi = CostModel().seconds_per_image(VOC_STATS)
    assert spi == {"il": 20.0, "ilc": 22.22, "bb": 38.1, "assisted": 57.7, "full": 239.7}


def test_cost_depends_on_every_statistic_and_time():
    base = CostModel().seconds_per_image(LabelStats(10, 1.0, 2.0))
    assert base == {"il": 10.0, "ilc": 11.48, "bb": 9.0 + 14.0, "assisted": 9.0 + 28.0, "full": 9.0 + 158.0}
    slow_masks = CostModel(mask_s=100.0).seconds_per_image(LabelStats(10, 1.0, 2.0))
    assert slow_masks["full"] == 209.0 and slow_masks["bb"] == base["bb"] and slow_masks["assisted"] == 37.0
    assert CostModel(assisted_mask_s=34.0).seconds_per_image(LabelStats(10, 1.0, 2.0))["assisted"] == 77.0


@pytest.mark.parametrize(
    "text,seconds",
    [("4d", 4 * 86400), ("2.5h", 9000), ("90m", 5400), ("3600s", 3600), ("12", 12), ("0.1d", 8640)],
)
def test_parse_budget_units(text, seconds):
    assert parse_budget(text) == pytest.approx(seconds)


def test_parse_budget_hours_per_day():
    assert parse_budget("2d", hours_per_day=8) == 2 * 8 * 3600


@pytest.mark.parametrize("text", ["", "d", "4 days", "-1h", "4x", "1.2.3h"])
def test_parse_budget_rejects_garbage(text):
    with pytest.raises(BudgetsegError):
        parse_budget(text)


def test_max_strong_is_the_largest_n_that_fits():
    full, weak, pool = 239.7, 22.22, 1000
    for budget in [0.0, 22220.0, 50000.0, 100000.0, 1e6]:
        n = max_strong(budget, pool, full, weak)
        if budget < pool * weak:
            assert n is None
            continue
        assert plan_cost(n, pool - n, {"full": full, "ilc": weak}, "ilc") <= budget + 1e-6
        if n < pool:
            assert plan_cost(n + 1, pool - n - 1, {"full": full, "ilc": weak}, "ilc") > budget
    assert max_strong(1e9, 50, full) == 50  # capped at the pool
    assert max_strong(239.7 * 7, 50, full) == 7  # exact multiples are not lost to float noise


def test_plan_budget_reports_levels_and_mixed_plans():
    plan = plan_budget(parse_budget("4d"), VOC_STATS, pool=10582)
    assert plan["images_per_level"] == {"il": 17280, "ilc": 15553, "bb": 9070, "assisted": 5989, "full": 1441}
    assert plan["mixed"]["none"]["n_full"] == 1441
    assert plan["mixed"]["bb"]["n_full"] is None  # 10582 boxes alone cost more than 4 days
    ilc = plan["mixed"]["ilc"]
    assert ilc["n_full"] + ilc["n_weak"] == 10582 and ilc["spent_seconds"] <= 4 * 86400


def test_cli_cost_json(capsys):
    assert main(["cost", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["seconds_per_image"] == {"il": 20.0, "ilc": 22.22, "bb": 38.1, "assisted": 57.7, "full": 239.7}
    assert (out["classes"], out["classes_per_image"], out["objects_per_image"]) == (20, 1.5, 2.8)


def test_cli_cost_overrides(capsys):
    assert main(["cost", "--json", "--classes", "10", "--classes-per-image", "1", "--objects-per-image", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["seconds_per_image"]["full"] == 167.0


def test_cli_plan_full_derives_the_budget(capsys):
    assert main(["plan", "--full", "100", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["budget"]["seconds"] == pytest.approx(23970.0)
    assert out["images_per_level"]["full"] == 100


def test_cli_bad_budget_is_one_line_error(capsys):
    assert main(["plan", "--budget", "4x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("budgetseg: error:") and "4x" in err and "\n" not in err


def test_cli_debug_shows_traceback():
    with pytest.raises(BudgetsegError):
        main(["--debug", "plan", "--budget", "4x"])


def test_config_overrides_and_validation():
    from budgetseg.config import load_config

    cfg = load_config(None, ["n_strong=50", "segmenter.lr=0.002", "pseudo.scales=[0.75, 1.0]", "pseudo.threshold=none"])
    assert cfg.n_strong == 50 and cfg.segmenter.lr == 0.002 and cfg.pseudo.scales == [0.75, 1.0]
    assert cfg.segmenter.iterations == 800 and cfg.annotator.iterations == 400  # sections keep their defaults
    for bad, msg in [
        (["data.size=100"], "multiple of 16"),
        (["task=instance", "data.size=80"], "multiple of 32"),
        (["annotator.iterations=0"], "iterations"),
        (["segmenter.strong_fraction=1.5"], "strong_fraction"),
        (["nonsense=1"], "unknown config key nonsense"),
        (["annotator.lr=fast"], "annotator.lr"),
        (["task=panoptic"], "task"),
    ]:
        with pytest.raises(BudgetsegError, match=msg):
            load_config(None, bad)


def test_cli_action_times_are_shared_by_cost_plan_and_split(tmp_path, capsys):
    # masks with an interactive assistant (SAM: 14 s) against polygons (79 s), VOC statistics
    assert main(["cost", "--json", "--seconds-per-assisted-mask", "34"]) == 0
    spi = json.loads(capsys.readouterr().out)["seconds_per_image"]
    assert spi["assisted"] == pytest.approx(18.5 + 2.8 * 34) and spi["full"] == 239.7
    assert main(["plan", "--budget", "1h", "--seconds-per-mask", "14", "--json"]) == 0  # the new flag name
    plan = json.loads(capsys.readouterr().out)
    assert plan["seconds_per_image"]["full"] == pytest.approx(57.7) and plan["images_per_level"]["full"] == 62
    assert main(["plan", "--budget", "1h", "--mask-s", "14", "--json"]) == 0  # the old one still works
    assert json.loads(capsys.readouterr().out)["images_per_level"]["full"] == 62
    write_voc(tmp_path / "voc")  # 3 images; C = 20, k = 1, n = 4/3: full = 19 + 4/3 * 79 = 124.3 s
    split = ["split", "--format", "voc", "--root", str(tmp_path / "voc"), "--budget", "130s", "--json"]
    assert main([*split, "--out", str(tmp_path / "a")]) == 0
    assert json.loads(capsys.readouterr().out)["n_strong"] == 1
    assert main([*split, "--out", str(tmp_path / "b"), "--seconds-per-mask", "14"]) == 0  # 19 + 4/3 * 14 = 37.7 s
    assert json.loads(capsys.readouterr().out)["n_strong"] == 3
    assert main(["cost", "--seconds-per-box", "-1"]) == 2
    assert "argument --seconds-per-box/--box-s: expected a number of seconds >= 0, got '-1'" in capsys.readouterr().err
