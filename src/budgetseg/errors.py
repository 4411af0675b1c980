"""One exception type for every problem a user can fix (bad input, missing data, bad config)."""

from __future__ import annotations

from pathlib import Path


class BudgetsegError(Exception):
    """A user-facing error. The CLI prints it on one line and exits with status 2 (traceback only with --debug)."""


def input_error(path: str | Path, problem: str) -> BudgetsegError:
    """`<path>: <problem>` — the one-line form every reader uses."""
    return BudgetsegError(f"{path}: {problem}")


def first_line(err: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (at most `limit` characters), or its type's name when empty."""
    text = str(err).strip()
    return text.splitlines()[0][:limit] if text else type(err).__name__
