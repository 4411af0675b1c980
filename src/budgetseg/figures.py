"""Figures as files: a matplotlib Figure rendered to PNG and written atomically, and text made safe for it."""

from __future__ import annotations

import io
from pathlib import Path

from matplotlib.figure import Figure

from budgetseg.io import atomic_write


def render_png(fig: Figure, dpi: int = 150) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def write_png(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def save_figure(path: Path, fig: Figure, dpi: int = 150) -> None:
    write_png(path, render_png(fig, dpi))


def plot_text(text: str) -> str:
    """`text` (a class name, a folder's name, a title) as matplotlib shows it literally: a '$' would start
    mathtext, which fails on names such as '$\\frac{a$'."""
    return str(text).replace("$", r"\$")
