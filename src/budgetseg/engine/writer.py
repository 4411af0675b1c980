"""Files written on threads beside a loop, a bounded number at a time: RAM does not grow with the number of
images, and a job's error reaches the caller."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from budgetseg.dist import machine_cores


def writer_threads(device: torch.device, world: int = 1) -> int:
    """Threads for a Writer beside a loop on `device`: the cores of this rank (of `world` on the machine) that
    the loop leaves free, at most 4. On CPU torch's own threads keep theirs, often all (then 0: write in the
    loop's thread): a thread that preempts one of them stalls each of its parallel regions (measured on 2 cores:
    a forward pass 2.5x slower, and no gain in finalize either)."""
    cores = machine_cores()
    busy = torch.get_num_threads() if device.type == "cpu" else 1
    return max(0, min(4, cores // world - busy))


class Writer:
    """Runs jobs (encode and write one image's files: Pillow's PNG encoder and file writes release the GIL) on
    `threads` threads beside the caller, or in the caller's thread with threads=0.

    At most `pending` jobs are queued or running, so memory does not grow with the number of images; a job's
    error is raised in the caller's thread (by a later submit, or on leaving the with block, which waits for
    every job). One job's writes keep their order.
    """

    def __init__(self, threads: int, pending: int | None = None):
        self.pool = ThreadPoolExecutor(threads, "budgetseg-writer") if threads else None
        self.pending = pending or 4 * threads
        self.jobs: deque[Future] = deque()

    def submit(self, fn: Callable, *args) -> None:
        if self.pool is None:
            fn(*args)
            return
        while self.jobs and (len(self.jobs) >= self.pending or self.jobs[0].done()):
            self.jobs.popleft().result()
        self.jobs.append(self.pool.submit(fn, *args))

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            while exc_type is None and self.jobs:
                self.jobs.popleft().result()
        finally:  # on an error: drop the jobs not yet started, wait for the running ones
            if self.pool is not None:
                self.pool.shutdown(wait=True, cancel_futures=True)
