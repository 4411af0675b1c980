"""Budget-matched comparison of annotation strategies (the paper's "heterogeneous annotations" experiment, and
the question a budget-holder asks: masks on a few images, boxes on many, or a mix?).

For each budget B and strategy (P pool images; seconds per image of each label type from cost.py):
  masks / rsis  N full masks;                                N = largest with N * Full <= B
  tags          N full masks + image-level tags of the rest;  N * Full + (P - N) * IL <= B  (semantic)
  wrsis         N full masks + IL+C of the rest, W-RSIS;      N * Full + (P - N) * IL+C <= B (instance)
  boxes         no mask: B / BB images with boxes
  mix           `mix_share` of B on full masks, the rest on boxes
f_theta trains on what the strategy bought (boxes through their mask estimates, data/boxmask.py), pseudo-labels
the rest, and g_phi trains on both, as in every run. Runs go to out/<budget>-<strategy>/ (finished ones are
skipped, interrupted ones resume); out/compare.{md,json} and out/compare_<metric>.png hold the figures.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from budgetseg.config import DataConfig, LabelMix, RunConfig, validate
from budgetseg.cost import (
    MIX_SHARE,
    box_counts,
    describe_seconds,
    max_strong_at,
    mix_unit_seconds,
    parse_budget,
)
from budgetseg.data.readers import open_split
from budgetseg.data.stats import dataset_stats
from budgetseg.errors import BudgetsegError
from budgetseg.figures import save_figure
from budgetseg.io import write_json, write_text
from budgetseg.pipeline import run
from budgetseg.plan import cost_of, weak_level
from budgetseg.runlog import LOGGER
from budgetseg.table import markdown_table
from budgetseg.tasks import METRICS

STRATEGIES = {
    "masks": "masks",
    "rsis": "RSIS",
    "tags": "masks + tags",
    "wrsis": "W-RSIS",
    "boxes": "boxes",
    "mix": "masks + boxes",
}
TASK_STRATEGIES = {"semantic": ("masks", "tags", "boxes", "mix"), "instance": ("rsis", "wrsis", "boxes", "mix")}


def strategy_config(cfg: RunConfig, budget: str, strategy: str, counts: tuple[int, int] = (0, 0)) -> RunConfig:
    """The run of `strategy` at `budget`: the pipeline's own budget rule for the mask strategies, the `counts`
    (N full masks, box images) for boxes and mix."""
    if strategy not in STRATEGIES:
        raise BudgetsegError(f"unknown strategy {strategy!r} ({', '.join(STRATEGIES)})")
    model = dataclasses.replace(cfg.model, class_inputs=strategy == "wrsis")
    pseudo = dataclasses.replace(cfg.pseudo, image_labels=strategy == "tags")
    boxes = counts[1] if strategy in ("boxes", "mix") else 0
    labels = LabelMix(boxes=boxes, box_classes=cfg.data.labels.box_classes)  # the strategy's labels, no other
    weak = cfg.data.weak_labels if strategy in ("tags", "wrsis") else None  # a file only these strategies read
    data = dataclasses.replace(cfg.data, labels=labels, weak_labels=weak)
    if boxes:
        return dataclasses.replace(cfg, n_strong=counts[0], budget=None, model=model, pseudo=pseudo, data=data)
    return dataclasses.replace(cfg, n_strong=None, budget=budget, model=model, pseudo=pseudo, data=data)


def solve(budget_s: float, pool: int, spi: dict[str, float], strategy: str) -> int | None:
    """N for one mask strategy under a budget (seconds), by the pipeline's own rule; None when it cannot buy even
    one full mask."""
    rule = strategy_config(RunConfig(), "0s", strategy)  # what the rest of the pool costs, as the pipeline says
    n = max_strong_at(budget_s, pool, spi, weak_level(rule))
    return n or None


def counts_of(
    budget_s: float, pool: int, spi: dict[str, float], strategy: str, share: float = MIX_SHARE
) -> tuple[int, int] | None:
    """(N full masks, box images) a strategy buys with `budget_s`; None when it cannot buy what it needs (one full
    mask; one box; the mix: one of each)."""
    if strategy not in ("boxes", "mix"):
        n = solve(budget_s, pool, spi, strategy)
        return None if n is None else (n, 0)
    return box_counts(budget_s, pool, spi, share if strategy == "mix" else 0.0)


def unit_seconds(strategy: str, spi: dict[str, float], share: float = MIX_SHARE) -> float:
    """Seconds per strong image of a strategy (what the advisor prices its N at): Full for the mask strategies,
    BB for boxes, and for the mix the budget over the images it buys (cost.mix_unit_seconds)."""
    if strategy == "boxes":
        return spi["bb"]
    return mix_unit_seconds(spi, share) if strategy == "mix" else spi["full"]


def needs(strategy: str, pool: int, spi: dict[str, float], share: float = MIX_SHARE) -> float:
    """The smallest budget (s) a strategy can run on."""
    return {
        "wrsis": (pool - 1) * spi["ilc"] + spi["full"],
        "tags": (pool - 1) * spi["il"] + spi["full"],
        "boxes": spi["bb"],
        "mix": max(spi["full"] / share, spi["full"] + spi["bb"]),
    }.get(strategy, spi["full"])


def compare(
    cfg: RunConfig,
    budgets: list[str],
    out: str | Path,
    strategies: tuple[str, ...] | None = None,
    share: float = MIX_SHARE,
) -> list[dict]:
    """Run every (budget, strategy) pair that the budget can pay for; returns the rows of the comparison.
    strategies: None = all of the task's (TASK_STRATEGIES)."""
    strategies = check_strategies(cfg.task, strategies, share, cfg.data)
    out = Path(out)
    pool = open_split(cfg.data, cfg.data.train_split)
    size = len(list(pool.ids)[: cfg.data.limit_pool])
    measured = dataset_stats(pool)
    spi, _ = cost_of(cfg, measured, f"the {cfg.data.train_split} pool", pool.class_names)  # as each run does
    seconds = {b: parse_budget(b, cfg.hours_per_day) for b in budgets}  # bad budgets fail before any run
    metric = METRICS[cfg.task][0]
    rows = []
    for b in budgets:
        for strategy in strategies:
            counts = counts_of(seconds[b], size, spi, strategy, share)
            row = {"budget": b, "budget_days": describe_seconds(seconds[b], cfg.hours_per_day)["days"]}
            row |= {"strategy": strategy, "n_strong": None if counts is None else sum(counts)}
            if counts is None:
                least = describe_seconds(needs(strategy, size, spi, share), cfg.hours_per_day)["days"]
                row["skipped"] = f"needs at least {least:.3f} d"
                LOGGER.info(f"compare: {b} {STRATEGIES[strategy]}: skipped, {row['skipped']}")
                rows.append(row)
                continue
            row |= {"n_full": counts[0], "n_boxes": counts[1]}
            folder = out / f"{b}-{strategy}"
            LOGGER.info(f"compare: {b} {STRATEGIES[strategy]}: {counts[0]} full + {counts[1]} boxes -> {folder}")
            c = strategy_config(cfg, b, strategy, counts)
            validate(c)  # what `run` would refuse from a config file
            res = run(c, folder, resume=True, cache_dir=out / "_annotators")
            rows.append(row | _figures(res, metric))
    head = {"task": cfg.task, "metric": metric, "mix_share": share, "seconds_per_image": spi, "pool": size}
    write_json(out / "compare.json", head | {"rows": rows})
    write_text(out / "compare.md", markdown(rows, metric))
    save_figure(out / f"compare_{metric}.png", plot(rows, metric))
    return rows


def check_strategies(task: str, strategies: tuple[str, ...] | None, share: float, data: DataConfig) -> tuple[str, ...]:
    """The strategies to compare for `task` (None: all of its own), refused one line at a time."""
    if not 0.0 < share < 1.0:
        raise BudgetsegError(f"--mix-share: the share of the budget on masks lies in (0, 1), got {share}")
    if data.strong != "random":
        raise BudgetsegError(
            f"compare draws each strategy's images from a fully labelled pool: it needs data.strong random, got "
            f"{data.strong!r}"
        )
    own = TASK_STRATEGIES[task]
    for s in strategies or own:
        if s not in own:
            raise BudgetsegError(f"compare: strategy {s!r} is not one of the {task} task's ({', '.join(own)})")
    return tuple(strategies or own)


INSTANCE_EXTRAS = ("g_phi_ap", "g_phi_sbd", "g_phi_abs_dic")  # AP; the CVPPP challenge's figures (instance/cvppp.py)


def _figures(res: dict, metric: str) -> dict:
    """A row's figures from a run's results.json: f_theta, pseudo-labels and g_phi in `metric`, and for the
    instance task g_phi's AP, SBD and |DiC| (and f_theta's)."""

    def value(net: str, key: str):
        return (res.get(net) or {}).get(key)

    row = {
        "n_weak": res.get("n_weak", 0),
        "spent_days": res["budget_days"],
        "spent_hours": res.get("budget_hours"),
        f"f_theta_{metric}": value("annotation_net", metric),
        f"pseudo_{metric}": value("pseudo_labels", metric),
        f"g_phi_{metric}": value("segmentation_net", metric),
    }
    # what the strategy deploys: g_phi, or f_theta where the budget labelled the whole pool (nothing to pseudo-label)
    row[f"final_{metric}"] = row[f"g_phi_{metric}"] if res.get("n_pseudo") else row[f"f_theta_{metric}"]
    if metric == "ap50":
        row |= {k: value("segmentation_net", k.removeprefix("g_phi_")) for k in INSTANCE_EXTRAS}
        row |= {"f_theta_sbd": value("annotation_net", "sbd"), "f_theta_abs_dic": value("annotation_net", "abs_dic")}
    return row


def _pct(x) -> str:
    return "" if x is None else f"{100 * x:.1f}"


def markdown(rows: list[dict], metric: str = "ap50") -> str:
    """The comparison's table: what each strategy bought (full masks, boxes, weak labels of the rest), spent, and
    scored; the instance task adds g_phi's AP, SBD and |DiC|."""
    name = METRIC_LABEL[metric]
    head = ["budget", "strategy", "N full", "boxes", "M weak", "spent (h)"]
    head += [f"f_theta {name}", f"pseudo {name}", f"g_phi {name}"]
    extras = INSTANCE_EXTRAS if metric == "ap50" else ()
    head += ["g_phi AP", "g_phi SBD", "g_phi |DiC|"][: len(extras)]
    body = []
    for r in rows:
        if "skipped" in r:
            blank = [""] * (3 + len(extras))
            body.append([r["budget"], STRATEGIES[r["strategy"]], "-", "-", "-", r["skipped"]] + blank)
            continue
        n_full, n_boxes = r.get("n_full", r["n_strong"]), r.get("n_boxes", 0)  # rows from before boxes: masks only
        hours = r.get("spent_hours") or 24 * r["spent_days"]  # rows from before the hours: days of 24 h
        cells = [r["budget"], STRATEGIES[r["strategy"]], n_full, n_boxes, r["n_weak"], f"{hours:.3g}"]
        cells += [_pct(r.get(f"{k}_{metric}")) for k in ("f_theta", "pseudo", "g_phi")]
        cells += [_pct(r.get(k)) for k in extras[:2]]
        if extras:
            abs_dic = r.get("g_phi_abs_dic")  # None (like SBD) for a run finished before the figures existed
            cells.append("" if abs_dic is None else f"{abs_dic:.2f}")
        body.append(cells)
    return markdown_table(head, body) + "\n"


METRIC_LABEL = {"ap50": "AP50", "miou": "mIoU"}


def plot(rows: list[dict], metric: str = "ap50") -> Figure:
    """`metric` (%) against the budget (days): what each strategy deploys (g_phi, or f_theta where nothing was left
    to pseudo-label) solid, pseudo-labels dashed, one colour per strategy."""
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    g_key, p_key = f"final_{metric}", f"pseudo_{metric}"
    for i, strategy in enumerate(STRATEGIES):
        rs = sorted(
            (r for r in rows if r["strategy"] == strategy and "skipped" not in r), key=lambda r: r["budget_days"]
        )
        if not rs:
            continue
        x = [r["budget_days"] for r in rs]
        for key, style, what in ((g_key, "-", "model"), (p_key, "--", "pseudo-labels")):
            y = [np.nan if r.get(key) is None else 100 * r[key] for r in rs]
            ax.plot(x, y, style, marker="o", color=f"C{i}", label=f"{STRATEGIES[strategy]}: {what}")
        for r in rs:
            ax.annotate(
                f"N={r['n_strong']}",
                (r["budget_days"], 100 * max(r.get(g_key) or 0, r.get(p_key) or 0)),  # above both markers
                xytext=(0, 6),
                textcoords="offset points",
                ha="center",
                fontsize=7,
                color=f"C{i}",
            )
    ax.set_xlabel("annotation budget (days of annotator time)")
    ax.set_ylabel(f"{METRIC_LABEL[metric]} (%)")
    ax.set_title("annotation strategies at equal budgets")
    ax.grid(True, alpha=0.4)
    ax.margins(x=0.08, y=0.12)
    ax.legend(fontsize=8, loc="best")
    return fig
