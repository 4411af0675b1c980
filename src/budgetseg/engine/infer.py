"""Inference over a dataset: images decoded by worker processes, seen whole at the working resolution (sliding
windows beyond data.window for tasks that tile), the task's predictions at each image's own size."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn
from tqdm import tqdm

from budgetseg.data.sample import SegDataset
from budgetseg.data.transforms import Resolution, working_image
from budgetseg.dist import SINGLE, Dist
from budgetseg.engine.device import autocast, to_input
from budgetseg.task import PLAIN, InferOptions, Task


class Letterboxed(torch.utils.data.Dataset):
    """Item k: (sample of ids[k], its image at the working resolution on a uint8 (H', W', 3) canvas (working_image:
    letterboxed to size x size at the fit scale), (h, w) of the image inside).

    A DataLoader runs it in worker processes, so images decode beside the forward pass (readers are plain
    Python objects and fork fine)."""

    def __init__(self, ds: SegDataset, ids: list[str], size: int | Resolution, cap: bool = False):
        self.ds, self.ids, self.size, self.cap = ds, ids, size, cap

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, k: int) -> tuple[object, torch.Tensor, tuple[int, int]]:
        sample = self.ds.load(self.ids[k])
        canvas, hw = working_image(sample.image, self.size, self.cap)
        return sample, torch.from_numpy(canvas), hw


def collate_letterboxed(items: list) -> tuple[list, torch.Tensor, list[tuple[int, int]]]:
    """Samples, images stacked to uint8 (B, H', W', 3) (canvases of other sizes padded bottom / right with 0 to the
    largest), (h, w) of each image inside its canvas."""
    samples, canvases, hws = zip(*items, strict=True)
    h, w = max(c.shape[0] for c in canvases), max(c.shape[1] for c in canvases)
    if any(c.shape[:2] != (h, w) for c in canvases):
        canvases = [nn.functional.pad(c, (0, 0, 0, w - c.shape[1], 0, h - c.shape[0])) for c in canvases]
    return list(samples), torch.stack(canvases), list(hws)


def predict_loader(
    ds: SegDataset, ids: list[str], size: int | Resolution, batch_size: int, workers: int, pin: bool, cap: bool = False
):
    """Batches of `ids` in order (consecutive chunks of batch_size), loaded by `workers` processes (0: here)."""
    chunks = [range(lo, min(lo + batch_size, len(ids))) for lo in range(0, len(ids), batch_size)]
    return torch.utils.data.DataLoader(
        Letterboxed(ds, ids, size, cap),
        batch_sampler=chunks,
        num_workers=workers,
        collate_fn=collate_letterboxed,
        pin_memory=pin,
    )


@torch.no_grad()
def predict(
    model: nn.Module,
    ds: SegDataset,
    ids: list[str],
    task: Task,
    *,
    size: int | Resolution,
    mean: tuple,
    std: tuple,
    batch_size: int = 16,
    options: InferOptions = PLAIN,
    d: Dist = SINGLE,
    progress: str | None = None,
    workers: int = 0,
    amp: bool = False,
    finish: bool = True,
) -> Iterator[tuple[object, object]]:
    """Yield (sample, prediction) for this rank's share of `ids`; the task turns the raw batch output into one
    image's prediction at the sample's own resolution on the device (`task.infer`, `task.decode_batch`, both given
    `options`), so only the decoded prediction reaches the CPU, where `task.finish` completes it.

    Images are seen whole at the working resolution (`size`: a Resolution, or an int: letterboxed to size x size),
    padded to the largest of their batch; beyond its window, a semantic task predicts sliding windows (infer_tiled)
    and an instance task shrinks them. `workers` processes decode them ahead of the loop (0: in this one; the
    predictions do not depend on it); `amp`: bf16 autocast on CUDA (engine.device.autocast). Streams: a few batches are
    held at a time.

    On CUDA a batch's predictions are yielded once the next batch is queued on the device: the caller's work on
    them (writing files, scoring) overlaps the GPU's. A task's decode may therefore copy to the CPU with
    non_blocking=True (pinned memory); its results are read only after the device has reached them.

    finish False: yield each image's decoded outputs, landed, instead of task.finish's prediction, for a caller that
    finishes them more than one way (evaluate's stop thresholds: one network pass, a prediction per threshold).
    """
    model.to(d.device).eval()
    mine = ids[d.rank :: d.world]
    cuda = d.device.type == "cuda"
    bar = tqdm(total=len(mine), desc=progress, disable=progress is None or not d.main, leave=False)
    pending = None  # (samples, predictions, event): the batch before, its copies to the CPU maybe in flight
    res = Resolution.of(size)
    for samples, images, hws in predict_loader(ds, mine, res, batch_size, workers, pin=cuda, cap=not task.tiles):
        x = to_input(images.to(d.device, non_blocking=cuda), mean, std, d.device)
        with autocast(d.device, amp):
            raw = infer_tiled(task, model, x, res.window, options, [s.id for s in samples])
        preds = task.decode_batch(raw, hws, [s.size for s in samples], options)
        done = torch.cuda.Event() if cuda else None
        if done is not None:
            done.record()
        if pending is not None:
            yield from _landed(task, *pending, bar, finish)
        pending = (samples, preds, done)
    if pending is not None:
        yield from _landed(task, *pending, bar, finish)
    bar.close()


def window_starts(n: int, window: int) -> list[int]:
    """Offsets of windows of side `window` covering 0..n, overlapping by a third at least, the last flush at the
    end."""
    if n <= window:
        return [0]
    step = max(1, window * 2 // 3)
    return sorted({*range(0, n - window, step), n - window})


def infer_tiled(
    task: Task, model: nn.Module, x: torch.Tensor, window: int | None, options: InferOptions, ids: list[str]
):
    """task.infer on x (B, 3, H, W); where H or W exceeds `window` and the task tiles (semantic), its probabilities
    (B, C, H, W) are those of sliding windows of window x window, averaged where they overlap (the image at its
    working scale, whatever its size, in windows the network was trained near)."""
    h, w = x.shape[-2:]
    if window is None or not task.tiles or (h <= window and w <= window):
        return task.infer(model, x, ids, options)
    total, count = None, torch.zeros((1, 1, h, w), device=x.device)
    for y in window_starts(h, window):
        for x0 in window_starts(w, window):
            p = task.infer(model, x[:, :, y : y + window, x0 : x0 + window], ids, options)
            if total is None:
                total = torch.zeros((*p.shape[:2], h, w), dtype=p.dtype, device=p.device)
            total[:, :, y : y + window, x0 : x0 + window] += p
            count[:, :, y : y + window, x0 : x0 + window] += 1
    return total / count


def _landed(task: Task, samples: list, decoded: list, done, bar, finish: bool) -> Iterator[tuple[object, object]]:
    """A batch's (sample, prediction) pairs once the device has finished them (done: a CUDA event, or None); finish
    False: (sample, decoded outputs)."""
    if done is not None:
        done.synchronize()
    for s, x in zip(samples, decoded, strict=True):
        yield s, task.finish(x) if finish else x
    bar.update(len(samples))
