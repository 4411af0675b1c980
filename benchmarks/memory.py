"""Peak memory of a whole run against the size of its pool: 200 strong images plus 1,800 or 7,800 unlabeled ones
(the built-in train split, then that split plus 6,000 more photos given as data.unlabeled). Training reads images
from disk, so the peak should barely grow with the pool. Prints figures (one JSON object with --json).

    GLIBC_TUNABLES=... .venv/bin/python benchmarks/memory.py [--pools 2000,8000] [--json]

Peak RSS is that of the run's main process (os.wait4), short trainings (--iters) and no test-time augmentation,
so that the 8,000-image run takes minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from budgetseg.data.readers import open_dataset


def link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system
        shutil.copyfile(src, dst)


def run_peak(cmd: list[str]) -> tuple[float, float]:
    """(peak RSS MiB, seconds) of the command's process."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode:
        raise SystemExit(f"run failed: {' '.join(cmd)}\n{p.stderr.read().decode()[-2000:]}")
    return usage.ru_maxrss / 1024, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="data/fashion-scenes")
    ap.add_argument("--pools", default="2000,8000", help="pool sizes (the first must not exceed the train split)")
    ap.add_argument("--iters", type=int, default=20, help="iterations of each network")
    ap.add_argument("--json", action="store_true", help="print one JSON object only")
    a = ap.parse_args()
    say = (lambda *x: print(*x, file=sys.stderr)) if a.json else print
    ds = open_dataset("voc", a.root, "train")
    train = list(ds.ids)
    figures: dict = {}
    with tempfile.TemporaryDirectory(dir=Path(a.root).resolve().parent) as tmp:
        tmp = Path(tmp)
        (tmp / "strong.txt").write_text("\n".join(train[:200]) + "\n")
        for pool in map(int, a.pools.split(",")):
            cmd = [sys.executable, "-m", "budgetseg.cli", "run", "configs/fashion_semantic.yaml"]
            sets = [
                f"data.root={a.root}",
                f"data.strong={tmp / 'strong.txt'}",
                f"data.limit_pool={pool}",
                "data.limit_val=50",
                f"annotator.iterations={a.iters}",
                f"segmenter.iterations={a.iters}",
                "pseudo.tta=false",
                "pseudo.scales=[1.0]",
            ]
            if pool > len(train):  # more unlabeled photos: the train images again under other names
                extra = tmp / f"extra{pool}"
                extra.mkdir()
                for k in range(pool - len(train)):
                    src = ds.image_path(train[k % len(train)])
                    link_or_copy(src, extra / f"extra_{k:05d}{src.suffix}")
                sets.append(f"data.unlabeled={extra}")
            for s in sets:
                cmd += ["--set", s]
            peak, secs = run_peak([*cmd, "--out", str(tmp / f"run{pool}")])
            figures[f"pool_{pool}_peak_rss_mib"] = round(peak, 1)
            say(f"pool of {pool} images (200 strong): peak RSS {peak:.0f} MiB ({secs:.0f} s)")
    sizes = [int(p) for p in a.pools.split(",")]
    ratio = figures[f"pool_{sizes[-1]}_peak_rss_mib"] / figures[f"pool_{sizes[0]}_peak_rss_mib"]
    figures["ratio"] = round(ratio, 3)
    say(f"peak RSS {sizes[-1]} / {sizes[0]} images: {ratio:.2f}")
    if a.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
