"""metrics.csv: one network's training curve, and the picture of it.

  iteration, loss, <the task's loss terms>, lr, encoder_lr, images_per_second   every log_every iterations
  val_<metric>                                                                  on the row of the last iteration,
                                                                                once the network is evaluated
Written whole at every checkpoint (atomically), so a resumed run continues the same file.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import torch

from budgetseg.io import write_text

FIXED = ("iteration", "loss")
TAIL = ("lr", "encoder_lr", "images_per_second")


def read_metrics(path: Path) -> list[dict[str, float]]:
    """The rows of a metrics.csv as floats (empty cells left out); [] when there is none."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def write_metrics(path: Path, rows: list[dict[str, float]]) -> None:
    """rows as CSV: FIXED columns first, the loss terms, TAIL, then val columns (in the order first seen)."""
    seen = list(dict.fromkeys(k for row in rows for k in row))
    terms = [k for k in seen if k not in FIXED and k not in TAIL and not k.startswith("val_")]
    vals = [k for k in seen if k.startswith("val_")]
    columns = [*FIXED, *terms, *[k for k in TAIL if k in seen], *vals]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: _cell(row.get(k)) for k in columns} for row in rows)
    write_text(path, buf.getvalue())


def _cell(v: float | None) -> str:
    return "" if v is None or not math.isfinite(v) else f"{v:.6g}"


class TrainLog:
    """The rows of one training's metrics.csv; a resumed training keeps those up to its checkpoint."""

    def __init__(self, path: Path, start: int):
        self.path = path
        self.rows = [r for r in read_metrics(path) if r["iteration"] <= start]

    def add(self, it: int, loss: torch.Tensor, terms: dict, opt: torch.optim.Optimizer, img_s: float) -> None:
        """A row at iteration `it` (1-based count of iterations done); reads the loss terms (a device sync)."""
        row = {"iteration": it, "loss": float(loss.item())}
        row |= {k: float(v.item()) for k, v in terms.items()}
        row |= {"lr": opt.param_groups[1]["lr"], "encoder_lr": opt.param_groups[0]["lr"], "images_per_second": img_s}
        self.rows.append(row)

    def save(self) -> None:
        write_metrics(self.path, self.rows)


def add_val(path: Path, key: str, value: float | None) -> None:
    """Put the evaluated metric (val_<key>) on the last row of a network's metrics.csv, where there is one."""
    rows = read_metrics(path)
    if rows and value is not None:
        rows[-1][f"val_{key}"] = float(value)
        write_metrics(path, rows)


def curves_figure(run: Path, nets: tuple[str, ...]):
    """A matplotlib Figure of the loss (and its terms, log scale) against iteration for each network of `run` with
    a metrics.csv (one panel each), or None when none has one."""
    from matplotlib.figure import Figure

    curves = [(n, read_metrics(run / n / "metrics.csv")) for n in nets]
    curves = [(n, rows) for n, rows in curves if rows]
    if not curves:
        return None
    fig = Figure(figsize=(4.2 * len(curves), 3.2), layout="constrained")
    for ax, (name, rows) in zip(fig.subplots(1, len(curves), squeeze=False)[0], curves, strict=True):
        its = [r["iteration"] for r in rows]
        for key in [k for k in rows[0] if k not in ("iteration", *TAIL) and not k.startswith("val_")]:
            ax.plot(its, [r.get(key, math.nan) for r in rows], lw=1.2 if key == "loss" else 0.8, label=key)
        val = [(k, v) for k, v in rows[-1].items() if k.startswith("val_")]
        title = name + "".join(f", {k[4:]} {100 * v:.1f}" for k, v in val)
        ax.set(title=title, xlabel="iteration", yscale="log")
        ax.legend(fontsize=7)
    return fig
