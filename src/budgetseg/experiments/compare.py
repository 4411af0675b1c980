"""Budget-matched comparison of annotation strategies (the paper's "heterogeneous annotations" experiment).

For each budget B and strategy:
  rsis   f_theta = RSIS on N full masks;                     N = largest with N * Full <= B
  wrsis  f_theta = W-RSIS on N full masks + IL+C of the rest; N = largest with N * Full + (P - N) * IL+C <= B
g_phi is a plain RSIS on strong + pseudo-labels either way. Runs go to out/<budget>-<strategy>/ (finished ones
are skipped, interrupted ones resume); out/compare.{md,json} and out/compare_ap50.png hold the figures.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from budgetseg.config import RunConfig
from budgetseg.cost import CostModel, describe_seconds, max_strong_at, parse_budget
from budgetseg.data.readers import open_split
from budgetseg.data.stats import dataset_stats
from budgetseg.errors import BudgetsegError
from budgetseg.figures import save_figure
from budgetseg.instance.task import InstanceTask
from budgetseg.io import write_json, write_text
from budgetseg.pipeline import run
from budgetseg.plan import weak_level
from budgetseg.runlog import LOGGER
from budgetseg.table import markdown_table

STRATEGIES = {"rsis": "RSIS", "wrsis": "W-RSIS"}


def strategy_config(cfg: RunConfig, budget: str, strategy: str) -> RunConfig:
    if strategy not in STRATEGIES:
        raise BudgetsegError(f"unknown strategy {strategy!r} ({', '.join(STRATEGIES)})")
    model = dataclasses.replace(cfg.model, class_inputs=strategy == "wrsis")
    return dataclasses.replace(cfg, n_strong=None, budget=budget, model=model)


def solve(budget_s: float, pool: int, spi: dict[str, float], strategy: str) -> int | None:
    """N for one strategy under a budget (seconds), by the pipeline's own rule; None when it cannot buy even
    one full mask."""
    rule = strategy_config(RunConfig(), "0s", strategy)  # what the rest of the pool costs, as the pipeline says
    n = max_strong_at(budget_s, pool, spi, weak_level(rule))
    return n or None


def compare(cfg: RunConfig, budgets: list[str], out: str | Path, strategies: tuple[str, ...] = tuple(STRATEGIES)):
    """Run every (budget, strategy) pair that the budget can pay for; returns the rows of the comparison."""
    if cfg.task != InstanceTask.name:
        raise BudgetsegError("compare: the RSIS / W-RSIS comparison needs task: instance")
    out = Path(out)
    pool = open_split(cfg.data, cfg.data.train_split)
    size = len(list(pool.ids)[: cfg.data.limit_pool])
    spi = CostModel().seconds_per_image(dataset_stats(pool).label_stats())
    seconds = {b: parse_budget(b, cfg.hours_per_day) for b in budgets}  # bad budgets fail before any run
    rows = []
    for b in budgets:
        for strategy in strategies:
            n = solve(seconds[b], size, spi, strategy)
            row = {"budget": b, "budget_days": describe_seconds(seconds[b], cfg.hours_per_day)["days"]}
            row |= {"strategy": strategy, "n_strong": n}
            if n is None:
                need = size * spi["ilc"] + spi["full"] if strategy == "wrsis" else spi["full"]
                row["skipped"] = f"needs at least {describe_seconds(need, cfg.hours_per_day)['days']:.3f} d"
                LOGGER.info(f"compare: {b} {STRATEGIES[strategy]}: skipped, {row['skipped']}")
                rows.append(row)
                continue
            folder = out / f"{b}-{strategy}"
            LOGGER.info(f"compare: {b} {STRATEGIES[strategy]}: N={n} -> {folder}")
            res = run(strategy_config(cfg, b, strategy), folder, resume=True, cache_dir=out / "_annotators")
            rows.append(row | _figures(res))
    write_json(out / "compare.json", {"seconds_per_image": spi, "pool": size, "rows": rows})
    write_text(out / "compare.md", markdown(rows))
    save_figure(out / "compare_ap50.png", plot(rows))
    return rows


def _figures(res: dict) -> dict:
    def ap(net: str, key: str):
        return (res.get(net) or {}).get(key)

    return {
        "n_weak": res.get("n_weak", 0),
        "spent_days": res["budget_days"],
        "f_theta_ap50": ap("annotation_net", "ap50"),
        "pseudo_ap50": ap("pseudo_labels", "ap50"),
        "g_phi_ap50": ap("segmentation_net", "ap50"),
        "g_phi_ap": ap("segmentation_net", "ap"),
        # the CVPPP leaf-segmentation challenge's figures (instance/cvppp.py)
        "f_theta_sbd": ap("annotation_net", "sbd"),
        "g_phi_sbd": ap("segmentation_net", "sbd"),
        "f_theta_abs_dic": ap("annotation_net", "abs_dic"),
        "g_phi_abs_dic": ap("segmentation_net", "abs_dic"),
    }


def _pct(x) -> str:
    return "" if x is None else f"{100 * x:.1f}"


def markdown(rows: list[dict]) -> str:
    head = [
        "budget",
        "strategy",
        "N full",
        "M IL+C",
        "spent (d)",
        "f_theta AP50",
        "pseudo AP50",
        "g_phi AP50",
        "g_phi AP",
        "g_phi SBD",
        "g_phi |DiC|",
    ]
    body = []
    for r in rows:
        if "skipped" in r:
            body.append([r["budget"], STRATEGIES[r["strategy"]], "-", "-", "-", r["skipped"], "", "", "", "", ""])
            continue
        abs_dic = r["g_phi_abs_dic"]  # None (like SBD) for a run finished before the figures existed
        body.append(
            [r["budget"], STRATEGIES[r["strategy"]], r["n_strong"], r["n_weak"], f"{r['spent_days']:.3f}"]
            + [_pct(r[k]) for k in ("f_theta_ap50", "pseudo_ap50", "g_phi_ap50", "g_phi_ap", "g_phi_sbd")]
            + ["" if abs_dic is None else f"{abs_dic:.2f}"]
        )
    return markdown_table(head, body) + "\n"


def plot(rows: list[dict]) -> Figure:
    """AP50 (%) against the budget (days): g_phi solid, pseudo-labels dashed, one colour per strategy."""
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    for i, strategy in enumerate(STRATEGIES):
        rs = sorted(
            (r for r in rows if r["strategy"] == strategy and "skipped" not in r), key=lambda r: r["budget_days"]
        )
        if not rs:
            continue
        x = [r["budget_days"] for r in rs]
        for key, style, what in (("g_phi_ap50", "-", r"$g_\phi$"), ("pseudo_ap50", "--", "pseudo-labels")):
            y = [np.nan if r[key] is None else 100 * r[key] for r in rs]
            ax.plot(x, y, style, marker="o", color=f"C{i}", label=f"{STRATEGIES[strategy]}: {what}")
        for r in rs:
            ax.annotate(
                f"N={r['n_strong']}",
                (r["budget_days"], 100 * max(r["g_phi_ap50"] or 0, r["pseudo_ap50"] or 0)),  # above both markers
                xytext=(0, 6),
                textcoords="offset points",
                ha="center",
                fontsize=7,
                color=f"C{i}",
            )
    ax.set_xlabel("annotation budget (days of annotator time)")
    ax.set_ylabel("AP50 (%)")
    ax.set_title("RSIS vs W-RSIS at equal annotation budgets")
    ax.grid(True, alpha=0.4)
    ax.margins(x=0.08, y=0.12)
    ax.legend(fontsize=8, loc="best")
    return fig
