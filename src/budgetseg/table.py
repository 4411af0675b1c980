"""Plain-text tables for the terminal and Markdown files."""

from __future__ import annotations


def fmt(x: object, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}".rstrip("0").rstrip(".") if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"
    return str(x)


def markdown_table(headers: list[str], rows: list[list[object]], digits: int = 3) -> str:
    """A GitHub-flavoured Markdown table, columns padded so it also reads well in a terminal. A "|" in a cell (as in
    the header |DiC|) is escaped, as GitHub reads it: else it would split the cell."""
    cells = [[str(h) for h in headers]] + [[fmt(c, digits) for c in r] for r in rows]
    cells = [[c.replace("|", "\\|") for c in r] for r in cells]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])
