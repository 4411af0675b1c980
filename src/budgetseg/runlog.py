"""budgetseg's messages: the standard `logging` logger "budgetseg" (LOGGER). The library only logs; where the
lines go is the caller's choice: the CLI shows them on stderr (stdout is for results: --json; to_stderr), and a
run appends its own to the run folder's log.txt (Logger, rank 0 only)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOGGER = logging.getLogger("budgetseg")


class Logger:
    """The log of a run (or of an evaluation): each message stamped with the time, logged (INFO) and appended to
    `path` (log.txt); on rank 0 only (`main`), so that a DDP run says each thing once."""

    def __init__(self, path: Path, main: bool):
        self.path, self.main = path, main

    def __call__(self, msg: str) -> None:
        if self.main:
            line = f"[{time.strftime('%H:%M:%S')}] {msg}"
            LOGGER.info(line)
            with open(self.path, "a") as f:
                f.write(line + "\n")


class _Lines(logging.Formatter):
    """A message as it is; a warning's with "warning: " before it."""

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        return f"warning: {msg}" if record.levelno >= logging.WARNING else msg


class _Stderr(logging.StreamHandler):
    """A handler on whatever sys.stderr is when a line is written (a test's capture, a redirected stream)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ sets it; the property always answers sys.stderr
        pass


@contextmanager
def to_stderr(level: int = logging.INFO) -> Iterator[None]:
    """budgetseg's messages of `level` and above on stderr, one a line, while the block runs (the CLI's)."""
    handler, before = _Stderr(), LOGGER.level
    handler.setFormatter(_Lines())
    LOGGER.addHandler(handler)
    LOGGER.setLevel(level)
    try:
        yield
    finally:
        LOGGER.removeHandler(handler)
        LOGGER.setLevel(before)
