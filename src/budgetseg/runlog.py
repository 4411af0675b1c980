"""The log of a run: its lines on stderr (stdout is for results: --json) and in the run folder's log.txt."""

from __future__ import annotations

import sys
import time
from pathlib import Path


class Logger:
    """Prints to stderr (stdout is for results: --json) and appends to the run's log.txt (rank 0 only)."""

    def __init__(self, path: Path, main: bool):
        self.path, self.main = path, main

    def __call__(self, msg: str) -> None:
        if self.main:
            line = f"[{time.strftime('%H:%M:%S')}] {msg}"
            print(line, file=sys.stderr, flush=True)
            with open(self.path, "a") as f:
                f.write(line + "\n")
