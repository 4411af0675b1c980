"""One exception type for every problem a user can fix (bad input, missing data, bad config)."""

from __future__ import annotations

from pathlib import Path


class BudgetsegError(Exception):
    """A user-facing error. The CLI prints it on one line and exits with status 2 (traceback only with --debug)."""


def input_error(path: str | Path, problem: str) -> BudgetsegError:
    """`<path>: <problem>` — the one-line form every reader uses."""
    return BudgetsegError(f"{path}: {problem}")
