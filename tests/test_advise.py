"""budgetseg advise: learning curves recovered from synthetic sources, refusals, and the landed docs/ figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from budgetseg.cli import main
from budgetseg.cost import max_strong_at
from budgetseg.experiments.advise import collect, curve, fit_curve

FULL_S, ILC_S, POOL = 228.6705, 12.2237, 2000
F_TRUE, G_TRUE = (0.60, 1.2, 0.5), (0.70, 1.5, 0.6)  # a, b, c of f_theta and g_phi
WIGGLE = np.array([0.003, -0.002, 0.0, 0.002, -0.003])  # seed-like noise, fixed so the test is deterministic


def report_json(path: Path, ns: list[int], f=F_TRUE, g=G_TRUE, wiggle=WIGGLE, metric: str = "miou") -> Path:
    """A report.json (as `budgetseg report` writes) of runs at `ns` scoring the curves f and g, plus a reference."""
    rows = [
        {
            "run": f"n{n:04d}",
            "group": "sweep",
            "reference": False,
            "n_strong": n,
            "n_pseudo": POOL - n,
            "budget_hours": round(n * FULL_S / 3600, 4),
            f"f_theta_{metric}": float(curve(n, *f) + w),
            f"g_phi_{metric}": float(curve(n, *g) + w),
        }
        for n, w in zip(ns, wiggle, strict=False)
    ]
    rows.append(
        {
            "run": "full supervision",
            "group": "sweep",
            "reference": True,
            "n_strong": POOL,
            "n_pseudo": None,
            "budget_hours": round(POOL * FULL_S / 3600, 4),
            f"f_theta_{metric}": None,
            f"g_phi_{metric}": 0.66,
        }
    )
    path.write_text(json.dumps({"metric": metric, "label": "mIoU", "rows": rows}))
    return path


def compare_json(path: Path, rsis=(0.5, 4.0, 0.55), wrsis=(0.45, 0.9, 0.5)) -> Path:
    """A compare.json of three budgets, each strategy's g_phi AP50 on a known curve."""
    spi = {"il": 10.0, "ilc": ILC_S, "bb": 28.0, "full": FULL_S}
    rows = []
    for days in (0.3, 0.4, 0.6):
        for strategy, truth in (("rsis", rsis), ("wrsis", wrsis)):
            n = max_strong_at(days * 86400, POOL, spi, "ilc" if strategy == "wrsis" else "none")
            rows.append(
                {
                    "budget": f"{days}d",
                    "budget_days": days,
                    "strategy": strategy,
                    "n_strong": n,
                    "n_weak": POOL - n if strategy == "wrsis" else 0,
                    "g_phi_ap50": float(curve(n, *truth)),
                }
            )
    path.write_text(json.dumps({"seconds_per_image": spi, "pool": POOL, "rows": rows}))
    return path


def advise_json(capsys, *argv: str) -> dict:
    assert main(["advise", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def refused(capsys, *argv: str) -> str:
    """The one stderr line of an advise that must exit with status 2."""
    assert main(["advise", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_fit_curve_recovers_parameters_of_exact_points():
    n = np.array([25.0, 50, 100, 200, 400])
    assert fit_curve(n, curve(n, *G_TRUE)) == pytest.approx(G_TRUE, rel=1e-3)


def test_budget_recovers_known_curves_from_a_report(tmp_path, capsys):
    src = report_json(tmp_path / "report.json", [25, 50, 100, 200, 400])
    obj = advise_json(capsys, str(src), "--budget", "18h")
    n = max_strong_at(18 * 3600, POOL, {"full": FULL_S}, "none")  # 283: inside the measured 25-400
    assert obj["task"] == "semantic" and obj["metric"] == "miou" and obj["budget"]["hours"] == 18
    for key, truth in (("f_theta", F_TRUE), ("g_phi", G_TRUE)):
        s = obj["strategies"][key]
        assert (s["n_strong"], s["n_weak"], s["extrapolated"]) == (n, 0, False)
        assert s["predicted"] == pytest.approx(curve(n, *truth), abs=0.01)
        assert s["low"] <= curve(n, *truth) <= s["high"]
        assert s["high"] - s["low"] < 0.06  # a band, not the whole axis
        assert s["fit"]["a"] == pytest.approx(truth[0], abs=0.05)
        assert [p[0] for p in s["points"]] == [25, 50, 100, 200, 400]
    assert obj["recommended"] == "g_phi"
    assert obj["references"] == [{"n_strong": POOL, "value": 0.66, "source": str(src)}]


def test_extrapolation_is_flagged_and_said(tmp_path, capsys):
    src = report_json(tmp_path / "report.json", [25, 50, 100])
    assert main(["advise", str(src), "--budget", "2d"]) == 0
    out = capsys.readouterr().out
    assert "| f_theta " in out and "extrapolated" in out
    assert "Recommended: g_phi" in out and "Caveat: N=755 lies outside the measured N 25-100" in out


def test_target_gives_the_cheapest_strategy_and_refuses_beyond_the_asymptote(tmp_path, capsys):
    src = report_json(tmp_path / "report.json", [25, 50, 100, 200, 400])
    obj = advise_json(capsys, str(src), "--target", "62%")  # above f_theta's asymptote 0.60, below g_phi's 0.70
    assert obj["target"] == pytest.approx(0.62)
    f, g = obj["strategies"]["f_theta"], obj["strategies"]["g_phi"]
    assert f["n_strong"] is None and "asymptote" in f["reason"]
    truth_n = (G_TRUE[1] / (G_TRUE[0] - 0.62)) ** (1 / G_TRUE[2])  # 422
    assert g["n_strong"] == pytest.approx(truth_n, rel=0.1)
    assert g["spent"]["seconds"] == pytest.approx(g["n_strong"] * FULL_S, rel=1e-3)
    assert obj["recommended"] == "g_phi"


def test_compare_json_gives_rsis_and_wrsis_priced_by_its_rule(tmp_path, capsys):
    src = compare_json(tmp_path / "compare.json")
    obj = advise_json(capsys, str(src), "--budget", "0.5d")
    spi = {"full": FULL_S, "ilc": ILC_S}
    assert obj["task"] == "instance" and set(obj["strategies"]) == {"rsis", "wrsis"}
    truths = {}
    for key, level, truth in (("rsis", "none", (0.5, 4.0, 0.55)), ("wrsis", "ilc", (0.45, 0.9, 0.5))):
        s = obj["strategies"][key]
        n = max_strong_at(0.5 * 86400, POOL, spi, level)
        assert s["n_strong"] == n and s["n_weak"] == (POOL - n if level == "ilc" else 0)
        truths[key] = curve(n, *truth)  # rsis 27.5 %, wrsis 35.3 %
        assert s["predicted"] == pytest.approx(truths[key], abs=0.01)
        assert s["low"] <= truths[key] <= s["high"]
    assert obj["recommended"] == "wrsis" == max(truths, key=truths.get)


def test_run_folders_of_a_sweep(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    for n in (25, 50, 100, POOL):
        run = sweep / f"n{n:04d}"
        run.mkdir(parents=True)
        f, g = curve(n, *F_TRUE), curve(n, *G_TRUE)
        results = {
            "task": "instance",
            "n_strong": n,
            "n_pseudo": POOL - n,
            "n_weak": 0,
            "budget_seconds": n * FULL_S,
            "annotation_net": {"ap50": f},
            "segmentation_net": {"ap50": g} if n < POOL else None,
            "annotation_net_long": {"ap50": f + 0.01} if n < POOL else None,  # the control of a sweep
        }
        (run / "results.json").write_text(json.dumps(results))
        (run / "cost.json").write_text(json.dumps({"seconds_per_image": {"full": FULL_S}, "n_weak": 0}))
    obj = advise_json(capsys, str(sweep), "--budget", "10h")
    assert obj["task"] == "instance" and obj["metric"] == "ap50"
    assert set(obj["strategies"]) == {"f_theta", "f_theta_long", "g_phi"}
    assert obj["strategies"]["g_phi"]["n_strong"] == max_strong_at(36000, POOL, {"full": FULL_S})
    assert [r["n_strong"] for r in obj["references"]] == [POOL]


def test_too_few_runs_are_refused(tmp_path, capsys):
    src = report_json(tmp_path / "report.json", [50, 100])
    err = refused(capsys, str(src), "--budget", "1d")
    assert "needs at least 3 runs of different N, got 2" in err


def test_non_monotone_runs_are_refused(tmp_path, capsys):
    src = report_json(tmp_path / "report.json", [25, 50, 100], wiggle=np.array([0.0, 0.05, -0.05]))
    err = refused(capsys, str(src), "--budget", "1d")
    assert "N=100 scores" in err and "not monotone" in err


def test_when_no_strategy_fits_the_refusal_gives_each_ones_reason(tmp_path, capsys):
    src = report_json(tmp_path / "report.json", [25, 50, 100], f=(0.3, -2.0, 0.5), wiggle=np.array([0.0, 0.05, -0.05]))
    err = refused(capsys, str(src), "--budget", "1d")
    assert "\n" not in err.strip() and "no strategy's runs fit a learning curve" in err
    assert "f_theta: N=" in err and "g_phi: N=" in err


def test_noise_tolerates_runs_that_swing_by_it_and_widens_the_band(tmp_path, capsys):
    # the runs of test_non_monotone_runs_are_refused swing by 5 points: at --noise 6 they fit, with a wider band
    src = report_json(tmp_path / "report.json", [25, 50, 100], wiggle=np.array([0.0, 0.05, -0.05]))
    assert "not monotone in N (tolerance 1 points)" in refused(capsys, str(src), "--budget", "1d")
    noisy = advise_json(capsys, str(src), "--budget", "1d", "--noise", "6")
    assert set(noisy["strategies"]) == {"f_theta", "g_phi"} and noisy["noise"] == pytest.approx(0.06)
    smooth = report_json(tmp_path / "smooth.json", [25, 50, 100])
    bands = {}
    for noise in ("1", "6"):
        g = advise_json(capsys, str(smooth), "--budget", "1d", "--noise", noise)["strategies"]["g_phi"]
        bands[noise] = g["high"] - g["low"]
    assert bands["6"] > 2 * bands["1"]
    for bad in ("0", "100", "nan"):
        assert "--noise must lie in (0, 100) points" in refused(capsys, str(src), "--budget", "1d", "--noise", bad)


def test_a_strategy_whose_runs_wobble_is_left_out_and_the_others_advised(tmp_path, capsys):
    # f_theta falls as N grows (on video, each N draws other frames), g_phi rises: advice from g_phi alone
    src = report_json(tmp_path / "report.json", [25, 50, 100], f=(0.3, -2.0, 0.5))
    obj = advise_json(capsys, str(src), "--budget", "1d")
    assert set(obj["strategies"]) == {"g_phi"} and obj["recommended"] == "g_phi"
    assert list(obj["left_out"]) == ["f_theta"] and "not monotone" in obj["left_out"]["f_theta"]
    assert main(["advise", str(src), "--budget", "1d"]) == 0
    assert "Left out: f_theta: N=50 scores" in capsys.readouterr().out


def test_bad_sources_and_arguments_are_refused(tmp_path, capsys):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert str(broken) in refused(capsys, str(broken), "--budget", "1d")
    assert "no such file" in refused(capsys, str(tmp_path / "missing"), "--budget", "1d")
    (tmp_path / "empty").mkdir()
    assert "no results.json, run subfolders" in refused(capsys, str(tmp_path / "empty"), "--budget", "1d")
    sem, ins = report_json(tmp_path / "sem.json", [25, 50, 100]), compare_json(tmp_path / "compare.json")
    assert "different tasks" in refused(capsys, str(sem), str(ins), "--budget", "1d")
    assert "exactly one of --budget" in refused(capsys, str(sem))
    assert "percentage" in refused(capsys, str(sem), "--target", "135")


def test_landed_semantic_report(capsys):
    obj = advise_json(capsys, "docs/results/semantic/report.json", "--budget", "1d")
    assert set(obj["strategies"]) == {"f_theta", "f_theta_long", "g_phi"}  # the sweep trained the control
    for s in obj["strategies"].values():
        assert {"n_strong", "n_weak", "predicted", "low", "high", "extrapolated", "fit", "points"} <= set(s)
        assert 0 <= s["low"] <= s["predicted"] <= s["high"] <= 1
        assert s["extrapolated"] is True  # 1 d buys N=377, the sweep measured up to 200
    assert obj["recommended"] in obj["strategies"]


def test_landed_compare_with_plot(tmp_path, capsys):
    png = tmp_path / "advice.png"
    assert main(["advise", "docs/results/compare/compare.json", "--budget", "0.4d", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "| rsis " in out and "| wrsis " in out and "Recommended: rsis" in out  # as measured: 22.5 vs 16.3
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_wrsis_run_folders_are_priced_with_their_weak_labels(tmp_path):
    for n in (10, 50, 120):
        run = tmp_path / "wrsis" / f"n{n:04d}"
        run.mkdir(parents=True)
        results = {
            "task": "instance",
            "n_strong": n,
            "n_pseudo": POOL - n,
            "n_weak": POOL - n,
            "budget_seconds": n * FULL_S + (POOL - n) * ILC_S,
            "annotation_net": {"ap50": 0.3},
            "segmentation_net": {"ap50": 0.2},
        }
        (run / "results.json").write_text(json.dumps(results))
        (run / "cost.json").write_text(json.dumps({"seconds_per_image": {"full": FULL_S, "ilc": ILC_S}}))
    task, by_key, refs = collect([tmp_path / "wrsis"])
    assert (task, set(by_key), refs) == ("instance", {"wrsis_f_theta", "wrsis"}, [])
    pricing = by_key["wrsis"][0].pricing
    assert (pricing.full_s, pricing.weak_s, pricing.pool) == (FULL_S, pytest.approx(ILC_S), POOL)
    assert pricing.strong_within(0.5 * 86400) == max_strong_at(0.5 * 86400, POOL, {"full": FULL_S, "ilc": ILC_S}, "ilc")


def test_advise_prices_labels_at_other_action_times(capsys):
    """The curves are the same; masks at 14 s instead of 79 s buy more N for the same budget."""
    args = ["advise", "docs/results/semantic/report.json", "--budget", "1d", "--json"]
    assert main(args) == 0
    paid = json.loads(capsys.readouterr().out)
    fashion = ["--classes", "10", "--classes-per-image", "1.5", "--objects-per-image", "2.79"]
    assert main([*args, *fashion]) == 0  # the statistics and times the sweep paid: the same N, give or take one
    same = json.loads(capsys.readouterr().out)
    assert abs(same["strategies"]["g_phi"]["n_strong"] - paid["strategies"]["g_phi"]["n_strong"]) <= 1
    assert main([*args, *fashion, "--seconds-per-mask", "14"]) == 0
    cheap = json.loads(capsys.readouterr().out)
    full_s = 8.5 + 2.79 * 14
    assert cheap["prices"]["seconds_per_image"]["full"] == pytest.approx(full_s)
    assert cheap["strategies"]["g_phi"]["n_strong"] == min(2000, int(86400 // full_s))
    assert cheap["strategies"]["g_phi"]["predicted"] > paid["strategies"]["g_phi"]["predicted"]
    assert main([*args, "--seconds-per-mask", "14"]) == 2  # no statistics to price with: refused, one line
    assert "needs the label statistics" in capsys.readouterr().err


def test_landed_report_with_the_augmented_control(capsys):
    """docs/results/semantic_long's sweep trained the augmented control too: the advisor fits it as a fourth curve."""
    rows = json.loads(Path("docs/results/semantic_long/report.json").read_text())["rows"]
    measured = {r["n_strong"]: r["f_theta_long_aug_miou"] for r in rows if not r["reference"]}
    obj = advise_json(capsys, "docs/results/semantic_long/report.json", "--budget", "10h")
    assert set(obj["strategies"]) == {"f_theta", "f_theta_long", "f_theta_long_aug", "g_phi"}
    aug = obj["strategies"]["f_theta_long_aug"]
    assert aug["what"].endswith("as long as g_phi, + colour jitter, cutout, CutMix")
    # 10 h buys N between the measured 100 and 200: the fitted curve lies between their scores
    assert 100 < aug["n_strong"] < 200 and measured[100] < aug["predicted"] < measured[200]


def test_a_budget_whose_n_was_measured_is_advised_on_the_measurement(tmp_path, capsys):
    # g_phi falls as N grows (W-RSIS on CVPPP does): no curve fits it, but at N = 25 it was measured far above f_theta
    src = report_json(tmp_path / "report.json", [25, 50, 100], g=(0.5, -2.0, 0.5))
    hours = f"{25 * FULL_S / 3600 + 0.001:.4f}h"  # buys exactly N = 25
    obj = advise_json(capsys, str(src), "--budget", hours)
    assert "g_phi" in obj["left_out"] and set(obj["strategies"]) == {"f_theta"}
    assert obj["measured"]["g_phi"] == {**obj["measured"]["g_phi"], "n_strong": 25, "runs": 1}
    assert obj["measured"]["g_phi"]["value"] == pytest.approx(curve(25, 0.5, -2.0, 0.5) + WIGGLE[0])
    assert obj["measured"]["f_theta"]["value"] == pytest.approx(curve(25, *F_TRUE) + WIGGLE[0])
    assert obj["recommended"] == "g_phi" and obj["within_band"] == []
    assert main(["advise", str(src), "--budget", hours]) == 0
    out = capsys.readouterr().out
    assert "Measured at this budget: g_phi" in out and "advised only where it was measured" in out
    # between the measured N the curve alone speaks: g_phi has none, so f_theta is advised
    between = advise_json(capsys, str(src), "--budget", f"{37 * FULL_S / 3600:.4f}h")
    assert between["measured"] == {} and between["recommended"] == "f_theta"


def test_no_curve_fits_but_the_budget_was_measured(tmp_path, capsys):
    """Neither strategy's runs are monotone: refused between the measured N, advised on the runs at a measured N."""
    src = report_json(tmp_path / "report.json", [25, 50, 100], f=(0.3, -2.0, 0.5), g=(0.5, -2.0, 0.5))
    hours = f"{25 * FULL_S / 3600 + 0.001:.4f}h"  # buys exactly N = 25
    plot = tmp_path / "advice.png"
    obj = advise_json(capsys, str(src), "--budget", hours, "--plot", str(plot))
    assert obj["strategies"] == {} and set(obj["left_out"]) == {"f_theta", "g_phi"}
    assert obj["recommended"] == "g_phi" and plot.stat().st_size > 0
    err = refused(capsys, str(src), "--budget", f"{37 * FULL_S / 3600:.4f}h")
    assert "no strategy's runs fit a learning curve" in err


def test_a_report_prices_each_group_and_names_wrsis_rows(tmp_path, capsys):
    """A W-RSIS group (weak_given) in a report.json pays for its pool's IL+C; its f_theta, given val's IL+C, is
    never recommended, and the overlap sentence gives the rule it applies (bands of +-2 noise)."""
    src = report_json(tmp_path / "report.json", [25, 50, 100])
    obj = json.loads(src.read_text())
    obj["rows"] += [
        {
            "run": f"n{n:04d}",
            "group": "wrsis",
            "reference": False,
            "weak_given": True,
            "n_strong": n,
            "n_pseudo": POOL - n,
            "budget_hours": round((n * FULL_S + (POOL - n) * ILC_S) / 3600, 4),
            "f_theta_miou": 0.9,
            "g_phi_miou": float(curve(n, *G_TRUE)) + 0.16,  # at N = 25, near what g_phi buys without counts
        }
        for n in (25, 50, 100)
    ]
    src.write_text(json.dumps(obj))
    task, by_key, _ = collect([src])
    assert set(by_key) == {"f_theta", "g_phi", "wrsis_f_theta", "wrsis"}
    assert by_key["wrsis"][0].pricing.weak_s == pytest.approx(ILC_S, rel=1e-3)
    assert by_key["g_phi"][0].pricing.weak_s == 0.0
    hours = f"{(25 * FULL_S + (POOL - 25) * ILC_S) / 3600 + 0.001:.4f}h"  # W-RSIS's N = 25 with its counts
    obj = advise_json(capsys, str(src), "--budget", hours)
    assert obj["measured"]["wrsis"]["n_weak"] == POOL - 25 and obj["recommended"] == "wrsis"
    assert main(["advise", str(src), "--budget", hours]) == 0
    out = capsys.readouterr().out
    assert "Its band (+-2.0 points, two runs' noise) overlaps g_phi's" in out
