"""Tables, a metric-vs-budget plot and a picture grid from finished run folders (see pipeline.py).

Writes into `out/`: results.md, results.csv, report.json, <metric>_vs_budget.png, grid.png, and confusion.png
where the runs carry confusion matrices (semantic runs made since they were recorded).
A reference run is one with n_pseudo == 0: f_theta trained on the whole pool with full supervision.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from matplotlib.transforms import blended_transform_factory

from budgetseg.config import DataConfig, merge
from budgetseg.data.readers import open_split
from budgetseg.data.sample import IGNORE, read_label_png, voc_palette
from budgetseg.errors import BudgetsegError, input_error
from budgetseg.figures import plot_text, render_png, write_png
from budgetseg.io import check_output, csv_text, write_json, write_text
from budgetseg.runlog import LOGGER
from budgetseg.semantic.metrics import confusions_text, row_shares, top_confusions
from budgetseg.table import fmt, markdown_table
from budgetseg.tasks import METRICS, TASKS, task_class, task_name_of
from budgetseg.trainlog import curves_figure

# Metric key -> further figures each row carries for every network: (results.json key, label, in %) (Task.extra_metrics:
# an instance run's are the CVPPP leaf-segmentation challenge's); the Markdown table shows the first two.
EXTRAS = {cls.metric: cls.extra_metrics for cls in TASKS.values() if cls.extra_metrics}
SHOWN_EXTRAS = 2
# row prefix -> results.json entry of the network
NETS = {
    "f_theta": "annotation_net",
    "f_theta_long": "annotation_net_long",  # the control; absent in runs without controls
    "f_theta_long_aug": "annotation_net_long_aug",  # the augmented control (controls_augmented)
    "g_phi": "segmentation_net",
}
CELL_INCHES = 1.3  # picture-grid cell size


def warn(msg: str) -> None:
    LOGGER.warning(msg)


def load_runs(run_dirs: list[Path]) -> list[dict]:
    """{"dir", "results", "config"} of each finished run; unfinished ones (no results.json) are skipped."""
    runs = []
    for d in map(Path, run_dirs):
        path = d / "results.json"
        if not path.is_file():
            warn(f"{d}: no results.json (unfinished run), skipped")
            continue
        try:
            results = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise input_error(path, f"cannot read results ({e.__class__.__name__}: {e})") from None
        cfg_path = d / "config.yaml"
        config = yaml.safe_load(cfg_path.read_text()) if cfg_path.is_file() else {}
        runs.append({"dir": d, "results": results, "config": config or {}})
    if not runs:
        raise BudgetsegError(f"report: none of the {len(run_dirs)} run folder(s) has a results.json")
    return runs


def metric_of(runs: list[dict]) -> tuple[str, str]:
    tasks = {task_name_of(r["results"]) for r in runs}
    if len(tasks) > 1:
        raise BudgetsegError(f"report: runs of different tasks ({', '.join(sorted(tasks))}) cannot share a table")
    task = tasks.pop()
    if task not in METRICS:
        raise BudgetsegError(f"report: the {task} task has no report yet")
    return METRICS[task]


def group_of(run: dict) -> str:
    return run["dir"].resolve().parent.name


def score(net: dict | None, key: str) -> float | None:
    return None if net is None or net.get(key) is None else float(net[key])


def net_cells(res: dict, key: str, reference: bool) -> dict:
    """{"<net>_<key>": score} of one run's results for the four networks of NETS; a reference run's f_theta goes
    in the g_phi column (it is the network to beat), the others are None there."""
    if reference:
        return {f"{n}_{key}": score(res["annotation_net"], key) if n == "g_phi" else None for n in NETS}
    return {f"{n}_{key}": score(res.get(entry), key) for n, entry in NETS.items()}


def extra_cells(res: dict, key: str, reference: bool) -> dict:
    """net_cells and the pseudo-labels' figure for each of EXTRAS[key] (none for a semantic run)."""
    cells = {}
    for x, _, _ in EXTRAS.get(key, ()):
        cells |= net_cells(res, x, reference)
        cells[f"pseudo_{x}"] = None if reference else (res.get("pseudo_labels") or {}).get(x)
    return cells


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 6)  # no 0.0800000001 in the CSV


def make_rows(runs: list[dict], key: str) -> list[dict]:
    """One row per run: non-reference runs sorted by (N, name), then the reference runs; the instance task's rows
    also carry EXTRAS (SBD, |DiC|, FBD, DiC) after the other columns.

    A reference row carries its f_theta score in the g_phi column (it is the network to beat) and no gain.
    Scores are fractions in [0, 1], as in results.json.
    """
    refs = [r for r in runs if r["results"]["n_pseudo"] == 0]
    semi = [r for r in runs if r["results"]["n_pseudo"] != 0]
    # Runs of several recipes (parent folders) may share folder names, so the label then names the parent.
    several = len({r["dir"].resolve().parent for r in semi}) > 1
    rows = []
    for r in semi:
        res, pl = r["results"], r["results"].get("pseudo_labels") or {}
        cells = net_cells(res, key, reference=False)
        f, f_long, f_aug, g = cells.values()
        name = f"{group_of(r)}/{r['dir'].name}" if several else r["dir"].name
        rows.append(
            head_cells(r, name, res["n_pseudo"])
            | cells
            | {
                # what pseudo-labels add: g_phi against f_theta trained as long
                "gain": _diff(g, f_long),
                "gain_vs_aug": _diff(g, f_aug),
                "gain_vs_f_theta": _diff(g, f),
                f"pseudo_{key}": pl.get(key),
                "kept_fraction": pl.get("kept_fraction"),
            }
            | extra_cells(res, key, reference=False)
        )
    rows.sort(key=lambda row: (row["n_strong"], row["run"]))
    for r in sorted(refs, key=lambda r: str(r["dir"])):
        name = f"{group_of(r)}/{r['dir'].name}"
        rows.append(
            head_cells(r, f"full supervision ({name})" if len(refs) > 1 else "full supervision", None)
            | net_cells(r["results"], key, reference=True)
            | {"gain": None, "gain_vs_aug": None, "gain_vs_f_theta": None, f"pseudo_{key}": None}
            | {"kept_fraction": None}
            | extra_cells(r["results"], key, reference=True)
        )
    return rows


def head_cells(run: dict, name: str, n_pseudo: int | None) -> dict:
    """A row's first columns: the run, its folder, N, M and the budget."""
    res = run["results"]
    return {
        "run": name,
        "group": group_of(run),
        "path": str(run["dir"]),
        "reference": n_pseudo is None,
        # W-RSIS (model.class_inputs): its f_theta is scored with the val images' IL+C labels given, g_phi is not
        "weak_given": bool((run["config"].get("model") or {}).get("class_inputs")),
        "n_strong": res["n_strong"],
        "n_pseudo": n_pseudo,
        "budget_hours": res["budget_hours"],
        "budget_days": res["budget_days"],
    }


def pct(x: float | None, signed: bool = False) -> str:
    return "-" if x is None else f"{100 * x:{'+' if signed else ''}.1f}"


def num(x: float | None) -> str:
    """Budgets span minutes to weeks: 3 significant digits, no exponent."""
    if x is None:
        return "-"
    return f"{x:.1f}" if abs(x) >= 100 else f"{x:.3g}" if abs(x) >= 1e-3 else fmt(float(x))


def has_augmented_control(rows: list[dict], key: str) -> bool:
    return any(r[f"f_theta_long_aug_{key}"] is not None for r in rows)


def markdown(rows: list[dict], key: str, label: str) -> str:
    """The report's table; the augmented control's two columns only where a run has it."""
    aug = has_augmented_control(rows, key)
    headers = [
        "run",
        "N",
        "M",
        "budget h",
        "budget d",
        f"f_theta {label}",
        f"f_theta long {label}",
        *([f"f_theta long + aug {label}"] if aug else []),
        f"g_phi {label}",
        "gain",
        *(["gain vs aug"] if aug else []),
        "gain vs f_theta",
        f"pseudo-label {label}",
        "kept %",
    ]
    cells = [
        [
            r["run"],
            r["n_strong"],
            fmt(r["n_pseudo"]),
            num(r["budget_hours"]),
            num(r["budget_days"]),
            pct(r[f"f_theta_{key}"]),
            pct(r[f"f_theta_long_{key}"]),
            *([pct(r[f"f_theta_long_aug_{key}"])] if aug else []),
            pct(r[f"g_phi_{key}"]),
            pct(r["gain"], signed=True),
            *([pct(r["gain_vs_aug"], signed=True)] if aug else []),
            pct(r["gain_vs_f_theta"], signed=True),
            pct(r[f"pseudo_{key}"]),
            pct(r["kept_fraction"]),
            *extra_columns(r, key, aug),
        ]
        for r in rows
    ]
    return markdown_table(headers + extra_columns(None, key, aug), cells)


def extra_columns(row: dict | None, key: str, aug: bool) -> list[str]:
    """The Markdown table's columns of the first SHOWN_EXTRAS of EXTRAS[key], f_theta to g_phi: their headers for
    row None, else the row's cells (percentages as the metric's; object counts with two decimals)."""
    nets = [n for n in NETS if aug or n != "f_theta_long_aug"]
    out = []
    for x, label, in_pct in EXTRAS.get(key, ())[:SHOWN_EXTRAS]:
        for n in nets:
            if row is None:
                out.append(f"{n.replace('_long', ' long').replace('_aug', ' + aug')} {label}")
            else:
                v = row[f"{n}_{x}"]
                out.append(pct(v) if in_pct else "-" if v is None else f"{v:.2f}")
    return out


def results_csv(rows: list[dict]) -> str:
    cols = [c for c in rows[0] if c not in ("path", "reference")]
    return csv_text([cols, *[["" if r[c] is None else r[c] for c in cols] for r in rows]])


def annotate_ns(ax: Axes, rows: list[dict], key: str, color: str) -> None:
    """Each row's N above its highest point at its budget."""
    for r in rows:
        top = max((100 * v for n in NETS if (v := r[f"{n}_{key}"]) is not None), default=None)
        if top is None:  # a run not scored (data.val_split null): no point to label
            continue
        ax.annotate(
            f"N={r['n_strong']}",
            (r["budget_hours"], top),
            xytext=(0, 6),
            textcoords="offset points",
            ha="center",
            fontsize=7,
            color=color,
        )


def plot_budget(rows: list[dict], key: str, label: str, title: str | None) -> Figure:
    """Score (%) of f_theta and g_phi against the strong-label budget (h), one line pair per recipe group."""
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    semi = [r for r in rows if not r["reference"]]
    groups = list(dict.fromkeys(r["group"] for r in semi))
    colors = [f"C{i}" for i in range(10)]
    for i, group in enumerate(groups):
        rs = [r for r in semi if r["group"] == group]
        x = np.array([r["budget_hours"] for r in rs], float)
        order = np.argsort(x, kind="stable")
        prefix = f"{plot_text(group)}: " if len(groups) > 1 else ""
        # W-RSIS's f_theta is scored given val's IL+C labels
        f_name = "N strong; given val's IL+C" if any(r["weak_given"] for r in rs) else "N strong only"
        for net, style, marker, name in (
            ("f_theta", "--", "o", rf"$f_\theta$ ({f_name})"),
            ("f_theta_long", ":", "^", r"$f_\theta$ trained as long as $g_\phi$"),
            ("f_theta_long_aug", "-.", "v", r"$f_\theta$ as long + colour jitter, cutout, CutMix"),
            ("g_phi", "-", "s", r"$g_\phi$ (N strong + M pseudo)"),
        ):
            if all(r[f"{net}_{key}"] is None for r in rs):  # runs without the control
                continue
            y = np.array([np.nan if r[f"{net}_{key}"] is None else 100 * r[f"{net}_{key}"] for r in rs])
            ax.plot(x[order], y[order], style, marker=marker, color=colors[i % 10], label=prefix + name, ms=5)
        annotate_ns(ax, rs, key, colors[i % 10])
    for j, ref in enumerate(r for r in rows if r["reference"]):
        v = 100 * ref[f"g_phi_{key}"]
        ax.axhline(
            v,
            ls=":" if j else "--",
            color="0.35",
            lw=1.2,
            label=f"{plot_text(ref['run'])}, N={ref['n_strong']}: {v:.1f}%",
        )
    budgets = [r["budget_hours"] for r in semi if r["budget_hours"] > 0]
    if budgets and max(budgets) > 4 * min(budgets):
        ax.set_xscale("log")
        # Plain numbers at 1-2-5 steps: a sweep often spans only a decade or two, where 10^k ticks say little.
        subs = (1.0, 2.0, 5.0) if max(budgets) <= 1000 * min(budgets) else (1.0,)
        ax.xaxis.set_major_locator(LogLocator(subs=subs))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.margins(x=0.08, y=0.12)
    ax.set_xlabel("annotation budget (hours)")
    ax.set_ylabel(f"{label} (%)")
    ax.set_title(plot_text(title) if title else f"val {label} vs annotation budget")
    ax.grid(True, which="major", alpha=0.4)
    ax.grid(True, which="minor", alpha=0.15)
    ax.legend(fontsize=8, loc="best")
    return fig


def confusion_panels(rows: list[dict], runs: list[dict]) -> list[list[dict]]:
    """Rows of panels {"run", "of", "counts" ((C, C) pixel counts), "names"}, one per confusion matrix the runs
    carry, in table order: the runs' pseudo-labels (on the pool images with ground truth), then their g_phi on val;
    a row without any matrix is left out."""
    by_path = {str(r["dir"]): r["results"] for r in runs}
    panels = []
    for net, what in (("pseudo_labels", "pseudo-labels"), ("segmentation_net", "g_phi on val")):
        line = []
        for row in rows:
            res = by_path[row["path"]].get(net) or {}
            if row["reference"] or res.get("confusion") is None or not res.get("per_class_iou"):
                continue
            names = list(res["per_class_iou"])  # the class order of the matrix
            line.append({"run": row["run"], "of": what, "counts": np.asarray(res["confusion"]), "names": names})
        if line:
            panels.append(line)
    return panels


def plot_confusion(panels: list[list[dict]]) -> Figure:
    """Row-normalised confusion matrices (% of each ground-truth class's pixels), one figure row per row of
    confusion_panels; shares of 10 % and more are written in. Class names label the outer panels only (the runs
    of one report share their classes)."""
    ncols = max(map(len, panels))
    side = 0.6 + 0.2 * max(len(p["names"]) for line in panels for p in line)  # inches per panel: readable cells
    fig = Figure(figsize=(side * ncols + 1.8, side * len(panels) + 1.2), layout="constrained")
    axes = fig.subplots(len(panels), ncols, squeeze=False)
    for ax in axes.ravel():
        ax.set_visible(False)
    for i, line in enumerate(panels):
        below = len(panels[i + 1]) if i + 1 < len(panels) else 0  # panels in the row below
        for j, p in enumerate(line):
            ax = axes[i, j]
            share = 100 * row_shares(p["counts"])
            ax.set_visible(True)
            im = ax.imshow(share, cmap="Blues", vmin=0, vmax=100, interpolation="nearest")
            for (t, q), v in np.ndenumerate(share):
                if v >= 10:
                    color = "white" if v > 60 else "black"
                    ax.text(q, t, f"{v:.0f}", ha="center", va="center", fontsize=5, color=color)
            ticks, outer = np.arange(len(p["names"])), j >= below  # nothing below: the x labels go here
            names = [plot_text(n) for n in p["names"]]
            ax.set_xticks(ticks, names if outer else [], rotation=90, fontsize=6)
            ax.set_yticks(ticks, names if j == 0 else [], fontsize=6)
            ax.set_title(f"{plot_text(p['run'])}: {p['of']}", fontsize=7)
            if outer:
                ax.set_xlabel("predicted", fontsize=7)
            if j == 0:
                ax.set_ylabel("ground truth", fontsize=7)
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.6, label="% of the ground-truth class's pixels")
    return fig


def colorize(label: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """uint8 (H, W) class ids -> uint8 (H, W, 3) VOC colours."""
    return palette[label]


def preview_ids(runs: list[dict], ds, n: int) -> list[str]:
    """Up to `n` ids with a preview, those kept by the most runs first, then in val order (when the dataset opened):
    runs written by versions that kept different frames still fill as many grid cells as they can."""
    kept = []
    for r in runs:
        folder = r["dir"] / "annotator" / "preview"
        if folder.is_dir():
            kept.append({p.stem for p in folder.glob("*.png")})
    have = set().union(*kept)
    order = [i for i in ds.ids if i in have] if ds is not None else []
    order = order or sorted(have)
    return sorted(order, key=lambda i: -sum(i in k for k in kept))[:n]  # stable: val order among equals


def open_val(runs: list[dict]):
    """The val dataset of the first run's config, or None (with a warning) when it cannot be opened."""
    try:
        data = merge(DataConfig(), runs[0]["config"].get("data") or {}, "data.")
        return open_split(data, data.val_split or "val")
    except BudgetsegError as e:
        warn(f"picture grid without image and ground truth: cannot open the val set ({e})")
        return None


def grid_columns(rows: list[dict], runs: list[dict]) -> list[tuple[str, Path]]:
    """(title, preview folder) per prediction column: f_theta and g_phi per run in row order, references last."""
    by_path = {str(r["dir"]): r for r in runs}
    several = len({r["group"] for r in rows if not r["reference"]}) > 1
    several_refs = sum(r["reference"] for r in rows) > 1  # e.g. one per working resolution: told apart by group
    cols = []
    for row in rows:
        d, n = by_path[row["path"]]["dir"], row["n_strong"]
        if row["reference"]:
            sub = f"\n{plot_text(row['group'])}" if several_refs else ""
            cols.append((f"full sup.\nN={n}{sub}", d / "annotator" / "preview"))
            continue
        sub = f"\n{plot_text(row['group'])}" if several else ""
        cols.append((rf"$f_\theta$ N={n}{sub}", d / "annotator" / "preview"))
        cols.append((rf"$g_\phi$ N={n}{sub}", d / "segmenter" / "preview"))
    return cols


def first_preview(cols: list[tuple[str, Path | None]], ids: list[str]) -> np.ndarray | None:
    for _, folder in cols:
        for i in ids:
            if folder is not None and (folder / f"{i}.png").is_file():
                return read_label_png(folder / f"{i}.png")
    return None


def add_class_legend(fig: Figure, below: Axes, class_names: list[str], palette: np.ndarray) -> None:
    """One compact legend row (or a few) just under the axes `below`, centred on the figure: the colour of every
    class id, background first, and of ignored pixels."""
    handles = [
        Patch(facecolor=palette[k] / 255, edgecolor="0.6", lw=0.3, label=plot_text(n))
        for k, n in enumerate(class_names)
    ]
    handles.append(Patch(facecolor=palette[IGNORE] / 255, edgecolor="0.6", lw=0.3, label="ignore"))
    width = fig.get_size_inches()[0]
    fig.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.04),  # save_figure's tight box takes it in
        # x in figure units, y in the bottom image's: images keep their aspect, so the figure's bottom edge can
        # lie well below them
        bbox_transform=blended_transform_factory(fig.transFigure, below.transAxes),
        ncol=max(1, min(len(handles), int(width / 0.85))),  # ~0.85 in per entry at font size 6
        fontsize=6,
        frameon=False,
        handlelength=1.0,
        handleheight=1.0,
        handletextpad=0.4,
        columnspacing=0.9,
    )


def plot_grid(rows: list[dict], runs: list[dict], ids: list[str], ds) -> Figure:
    """Rows = images; columns = image | ground truth | predictions (see grid_columns). Instance runs show each
    instance in its own colour (their previews hold instance indices)."""
    task = task_class(task_name_of(runs[0]["results"]))
    palette = np.asarray(voc_palette(), np.uint8).reshape(256, 3)
    palette[IGNORE] = 255  # VOC's cream border colour reads as a class; white reads as "no label"
    samples = {i: ds.load(i) for i in ids} if ds is not None else {}
    cols = ([("image", None), ("ground truth", None)] if ds is not None else []) + grid_columns(rows, runs)
    first = samples[ids[0]].semantic if samples else first_preview(cols, ids)
    aspect = min(max(first.shape[0] / first.shape[1], 0.5), 2.0) if first is not None else 1.0  # h / w
    fig = Figure(figsize=(CELL_INCHES * len(cols), CELL_INCHES * aspect * len(ids) + 0.3))
    axes = fig.subplots(len(ids), len(cols), squeeze=False, gridspec_kw={"wspace": 0.04, "hspace": 0.04})
    for i, image_id in enumerate(ids):
        for j, (name, folder) in enumerate(cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if i == 0:
                ax.set_title(name, fontsize=7)
            if j == 0:
                ax.set_ylabel(plot_text(image_id), fontsize=6)
            if folder is None:
                s = samples[image_id]
                truth = task.preview_truth(s)
                ax.imshow(s.image if name == "image" else colorize(truth, palette), interpolation="nearest")
            elif (folder / f"{image_id}.png").is_file():
                ax.imshow(colorize(read_label_png(folder / f"{image_id}.png"), palette), interpolation="nearest")
            else:
                ax.text(0.5, 0.5, "missing", ha="center", va="center", fontsize=6, color="0.5")
    if task.preview_classes and ds is not None:  # instance colours stand for instances, not classes
        add_class_legend(fig, axes[-1, 0], list(ds.class_names), palette)
    return fig


def explanation(rows: list[dict], key: str, label: str) -> str:
    """The paragraph under the report's table that says what its columns mean."""
    text = (
        f"N strong labels cost the budget; M images are pseudo-labelled by f_theta (trained on N); g_phi trains on "
        f"N + M. {label} in %; f_theta long = f_theta trained on the N strong images for as many iterations as "
        f"g_phi got in all (the control); gain = g_phi - f_theta long in points (what the pseudo-labels add), gain "
        f"vs f_theta = g_phi - f_theta; kept % = share of pseudo-label pixels kept. Full supervision: f_theta on "
        f"the whole pool (trained as long as g_phi in all where the sweep made it), shown in the g_phi column."
    )
    if has_augmented_control(rows, key):
        text += (
            " f_theta long + aug = the same control trained with colour jitter, cutout and CutMix on its strong "
            "images, the augmentation g_phi's pseudo-labelled images get; gain vs aug = g_phi - f_theta long + aug."
        )
    if any(r.get("weak_given") for r in rows):
        text += (
            " W-RSIS runs (model.class_inputs): f_theta is given each val image's IL+C labels (its classes and "
            "their counts), as it was given the pool's to pseudo-label it; g_phi is given nothing."
        )
    if EXTRAS.get(key):
        text += (
            " SBD and |DiC| as in the CVPPP leaf-segmentation challenge: SBD = symmetric best Dice in % (per image "
            "the lower of the mean best Dice of each predicted object with the true ones and of each true object "
            "with the predicted ones), |DiC| = mean absolute difference between the predicted and the true number "
            "of objects per image; results.csv and report.json also hold FBD (foreground Dice) and the signed DiC."
        )
    return text


def report(run_dirs: list[Path], out: Path, grid_images: int = 4, title: str | None = None) -> dict:
    """Summarise run folders into `out/`; returns {"table": Markdown table, "files": [written paths], and
    report.json's "metric", "label", "rows"}.

    Unfinished runs (no results.json) are skipped with a warning; the grid is skipped when no run kept previews.
    Every file is made before the first is written: a failure leaves `out` as it was.
    """
    out = Path(out)
    check_output(out, "--out", inputs=run_dirs, folder=True)
    runs = load_runs(run_dirs)
    key, label = metric_of(runs)
    rows = make_rows(runs, key)
    table = markdown(rows, key, label)
    made: dict[str, tuple] = {}  # file name -> (writer, what it writes)
    if any(not r["reference"] for r in rows):
        made[f"{key}_vs_budget.png"] = (write_png, render_png(plot_budget(rows, key, label, title)))
    ds = open_val(runs)
    ids = preview_ids(runs, ds, grid_images)
    if ids:
        made["grid.png"] = (write_png, render_png(plot_grid(rows, runs, ids, ds)))
    else:
        warn("no preview predictions in the runs, picture grid skipped")
    panels = confusion_panels(rows, runs)
    if panels:
        made["confusion.png"] = (write_png, render_png(plot_confusion(panels)))
    for r, name in zip(runs, run_names([r["dir"] for r in runs]), strict=True):  # training curves, a picture a run
        fig = curves_figure(r["dir"], CURVE_NETS)
        if fig is not None:
            made[f"curves_{name}.png"] = (write_png, render_png(fig, dpi=110))
    flat = [p for line in panels for p in line]
    confused = [{"run": p["run"], "of": p["of"], "pairs": top_confusions(p["counts"], p["names"])} for p in flat]
    md = results_markdown(table, label, title, explanation(rows, key, label), list(made), confused)
    made["results.md"] = (write_text, md)
    made["results.csv"] = (write_text, results_csv(rows))
    summary = {"metric": key, "label": label, "rows": rows, "confusions": confused}
    made["report.json"] = (write_json, summary)
    for name, (writer, what) in made.items():
        writer(out / name, what)
    return {"table": table, "files": [str(out / name) for name in made], **summary}


CURVE_NETS = ("annotator", "segmenter", "annotator_long", "annotator_long_aug")


def run_names(dirs: list[Path]) -> list[str]:
    """A distinct name for each run folder in file names: its folder name, with as many parent folders as it takes
    to tell it from the others (runs/a/full and runs/b/full: a_full and b_full), joined by "_"."""
    parts = [Path(d).resolve().parts for d in dirs]
    for depth in range(1, max(map(len, parts), default=1) + 1):
        names = ["_".join(p[-depth:]).lstrip("/_") for p in parts]
        if len(set(names)) == len(names):
            return names
    return names  # the same folder given twice: one picture


def results_markdown(table: str, label: str, title: str | None, explained: str, files: list[str], confused) -> str:
    """results.md: the table, what its columns mean (`explained`), the figures of `files` and the most confused
    classes."""
    md = [f"# {title or 'Results'}", "", table, "", explained]
    plot = next((f for f in files if f.endswith("_vs_budget.png")), None)
    if plot:
        md += ["", f"![{label} vs budget]({plot})"]
    if "grid.png" in files:
        md += ["", "![predictions](grid.png)"]
    if confused:
        md += ["", "Most confused classes (share of the ground-truth class's pixels given the other label):", ""]
        md += [f"- {c['run']}, {c['of']}: {confusions_text(c['pairs'])}" for c in confused]
        md += ["", "![confusion matrices](confusion.png)"]
    curves = [f for f in files if f.startswith("curves_")]
    if curves:
        md += ["", "Training curves (loss and its terms against iteration, per network; metrics.csv in each run):", ""]
        md += [f"![training curves of {c.removeprefix('curves_')[:-4]}]({c})" for c in curves]
    return "\n".join(md) + "\n"
