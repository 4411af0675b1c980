"""Atomic file writes (a temp file in the same folder, renamed over the target), write failures as one-line
errors naming the file, and a lock that keeps two processes out of one run folder."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from budgetseg.errors import BudgetsegError, first_line, input_error

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb", fsync: bool = True) -> Iterator[BinaryIO]:
    """Open a temp file next to `path`; on clean exit fsync and rename it onto `path`, else delete it.

    fsync=False keeps the all-or-nothing rename (a killed process leaves no partial file) but skips the flush to
    disk that only a power cut needs: for many small files that can be recomputed (pseudo-labels)."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; outputs get the usual permissions
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) or _torch_write_failure(e):
            raise write_error(path, e) from None
        raise


TMP_SUFFIX = ".tmp"  # atomic_open's temp files are .<name>.<random>.tmp


def _torch_write_failure(e: BaseException) -> bool:
    # torch.save reports a failed write (disk full, file too large) as "[enforce fail at inline_container.cc] ..."
    return isinstance(e, RuntimeError) and "inline_container" in str(e)


def write_error(path: Path, e: BaseException) -> BudgetsegError:
    """One line naming `path`: why it could not be written, and how much room its disk has left."""
    if _torch_write_failure(e):
        reason = "the write stopped part-way: disk full, or a file size limit"
    else:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else first_line(e, 120)
    try:
        free = f"; {shutil.disk_usage(path.parent).free / 2**20:.0f} MiB free on its disk"
    except OSError:
        free = ""
    return input_error(path, f"cannot write ({reason}{free})")


def remove_stale_temp_files(folder: Path, targets: set[Path] | None = None) -> int:
    """Delete the temp files that killed writers left under `folder` (only safe while no one else writes there:
    hold its lock); with `targets`, only those of these files (a folder of other files, e.g. predict's --out).
    Returns how many were removed."""
    stale = [p for p in Path(folder).rglob(f".*{TMP_SUFFIX}") if p.is_file()]
    if targets is not None:  # atomic_open's temp file of <folder>/<name> is <folder>/.<name>.<random>.tmp
        stale = [p for p in stale if p.parent / p.name[1 : -len(TMP_SUFFIX)].rsplit(".", 1)[0] in targets]
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


@contextmanager
def new_folder(out: str | Path, hint: str = "choose another folder") -> Iterator[Path]:
    """Build folder `out` all or nothing: refused when it exists and is not an empty folder (outputs never
    overwrite); the block fills a hidden sibling (same file system), renamed onto `out` when the block ends
    cleanly and deleted otherwise. The sibling names its maker (OWNER: pid and host), so that the temp folders
    of killed makers are deleted by the next call (remove_stale_temp_folders)."""
    out = Path(out)

    def check() -> None:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise input_error(out, f"exists and is not an empty folder; {hint}")

    check()
    tmp = temp_folder(out)
    try:
        yield tmp
        check()  # nobody took the name meanwhile
        os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700 folders; outputs get the usual permissions
        try:
            if out.exists():
                out.rmdir()
            os.rename(tmp, out)  # the owner file goes along: while it is in tmp, tmp is not stale
        except OSError:
            check()  # another call took the name between the check and the rename
            raise
        (out / OWNER).unlink(missing_ok=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def temp_folder(out: Path) -> Path:
    """A new hidden folder beside `out` (same file system: renamed onto it once filled) that names its maker in
    OWNER; the temp folders that killed makers left there are removed first (remove_stale_temp_folders)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_folders(out.parent, out.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=TMP_SUFFIX, dir=out.parent))
    (tmp / OWNER).write_text(json.dumps(_me()))
    return tmp


OWNER = ".owner"  # in new_folder's temp folder: {"pid", "host", "since"} of the process filling it
STALE_FOLDER_S = 3600.0  # a temp folder without a readable owner file (older budgetseg) is stale after this


def _me() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}


def _gone(holder: dict) -> bool:
    """Whether the process a lock or owner record names has ended (only known for this host's processes)."""
    return str(holder["host"]) == socket.gethostname() and not _alive(int(holder["pid"]))


def remove_stale_temp_folders(parent: Path, name: str) -> int:
    """Delete the temp folders new_folder left in `parent` when its process was killed (a killed export or select
    --copy left thousands of files): those of any output name whose owner file names a process of this host that
    has ended, and those of output `name` without a readable owner file (made by a budgetseg before it wrote
    one) untouched for STALE_FOLDER_S. Folders of live processes and of other hosts are left. Returns how many."""
    removed = 0
    for tmp in Path(parent).glob(f".*{TMP_SUFFIX}"):
        if not re.fullmatch(rf"\..+\.[a-z0-9_]{{8}}{re.escape(TMP_SUFFIX)}", tmp.name) or not tmp.is_dir():
            continue  # not a temp folder of mkdtemp's naming
        try:
            stale = _gone(json.loads((tmp / OWNER).read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            mine = tmp.name.startswith(f".{name}.") and len(tmp.name) == len(name) + 2 + 8 + len(TMP_SUFFIX)
            stale = mine and time.time() - tmp.stat().st_mtime > STALE_FOLDER_S
        if stale:
            shutil.rmtree(tmp, ignore_errors=True)
            removed += 1
    return removed


def is_run_folder(path: Path) -> bool:
    """Whether `path` is a pipeline run folder (config.yaml and split/, as plan.prepare leaves them)."""
    return (path / "config.yaml").is_file() and (path / "split").is_dir()


def check_run_folder(path: str | Path) -> Path:
    """`path` when it holds a run's config.yaml, else a one-line error."""
    if not Path(path).exists():
        raise input_error(path, "no such run folder")
    if not (Path(path) / "config.yaml").is_file():
        raise input_error(path, "not a run folder (no config.yaml)")
    return Path(path)


def check_output(out: str | Path, what: str, inputs: Iterable[str | Path] = (), folder: bool = False) -> None:
    """One-line errors, before any work starts, for an output path `out` (the option `what`, e.g. --out) that would
    overwrite what is not its command's: one lying inside a run folder (the run's commands own its files), an input
    (of `inputs`) or, for a `folder`, the folder holding an input file (outputs there would be taken for inputs
    later), an existing file (outputs never overwrite files; a folder output may be an existing folder)."""
    out = Path(out)
    here = out.resolve()
    for p in (here, *here.parents):
        if is_run_folder(p):
            raise input_error(out, f"lies in the run folder {p}, whose files are the run's; choose another {what}")
    for p in map(Path, inputs):
        if p.resolve() == here or (folder and p.is_file() and p.resolve().parent == here):
            raise input_error(out, f"{'is' if p.resolve() == here else 'holds'} the input {p}; choose another {what}")
    if out.exists() and (not folder or not out.is_dir()):
        kind = "a file, not a folder" if folder else "exists: outputs never overwrite a file"
        raise input_error(out, f"{kind}; choose another {what}")


def copy_image(src: Path, dest: Path) -> None:
    """Copy the image file `src` to `dest` (its folder made as needed); a failure is a one-line error naming
    `src`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copyfile(src, dest)
    except OSError as e:
        raise input_error(src, f"cannot copy image ({e.__class__.__name__}: {e})") from None


def atomic_copy(src: str | Path, dst: str | Path) -> None:
    """Copy a file so that `dst` is either absent, or whole."""
    with atomic_open(dst, "wb") as f, open(src, "rb") as g:
        shutil.copyfileobj(g, f, 1 << 20)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


STALE_UNREADABLE_S = 60.0  # an unreadable lock file older than this is a writer that died mid-write


@contextmanager
def folder_lock(folder: str | Path) -> Iterator[Path]:
    """Hold `folder`/.lock (pid, host and start time of the holder) while the block runs. A second process is
    refused with a one-line error; a lock left by a dead process on this host is taken over."""
    path = Path(folder) / ".lock"
    me = _me()
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            try:
                holder = json.loads(path.read_text())
                pid, host = int(holder["pid"]), str(holder["host"])
            except FileNotFoundError:
                continue  # released meanwhile: try again
            except (OSError, ValueError, KeyError, TypeError):
                if time.time() - path.stat().st_mtime < STALE_UNREADABLE_S:
                    raise BudgetsegError(f"{folder}: in use by another process (lock file {path})") from None
                path.unlink(missing_ok=True)
                continue
            if _gone(holder):
                path.unlink(missing_ok=True)  # its holder died: the run may be resumed
                continue
            raise BudgetsegError(
                f"{folder}: in use by process {pid} on {host} since {holder.get('since', '?')}; wait for it, or "
                f"delete {path} if that process is gone"
            ) from None
    with os.fdopen(fd, "w") as f:
        json.dump(me, f)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], Any], fsync: bool = True) -> None:
    """Call `write(fileobj)` on a temp file, then rename it onto `path`."""
    with atomic_open(path, "wb", fsync) as f:
        write(f)


def write_text(path: str | Path, text: str, fsync: bool = True) -> None:
    with atomic_open(path, "w", fsync) as f:
        f.write(text)


def finite(obj: Any) -> Any:
    """`obj` with every NaN or infinite float replaced by None: strict JSON readers reject NaN."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj


def csv_text(rows: Iterable[Iterable]) -> str:
    """CSV of `rows` (the first one the header), quoted by the csv module where a field needs it (a comma, a quote),
    one line each ending in a newline."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def write_json(path: str | Path, obj: Any, fsync: bool = True) -> None:
    """Strict JSON (NaN and infinities become null; figures that can be undefined carry a note saying why).
    fsync as atomic_open's."""
    write_text(path, json.dumps(finite(obj), indent=2, sort_keys=False, allow_nan=False) + "\n", fsync)
