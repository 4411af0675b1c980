"""Atomic file writes: write to a temp file in the same folder, then rename over the target."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb", fsync: bool = True) -> Iterator[BinaryIO]:
    """Open a temp file next to `path`; on clean exit fsync and rename it onto `path`, else delete it.

    fsync=False keeps the all-or-nothing rename (a killed process leaves no partial file) but skips the flush to
    disk that only a power cut needs: for many small files that can be recomputed (pseudo-labels)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; outputs get the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | Path, write: Callable[[BinaryIO], Any], fsync: bool = True) -> None:
    """Call `write(fileobj)` on a temp file, then rename it onto `path`."""
    with atomic_open(path, "wb", fsync) as f:
        write(f)


def write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
