"""The task-independent pass of pseudo-labelling: the annotation network over the unlabeled pool, each prediction
handed to the task's pseudo-label folder (budgetseg.task.PseudoLabels: semantic/pseudo.py, instance/pseudo.py),
which writes its files. Files are written on threads beside the forward pass where the machine has cores to spare
and the task's writes release the GIL, a bounded number at a time: RAM does not grow with the number of images.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from budgetseg.config import PseudoConfig
from budgetseg.data.sample import Sample, SegDataset, read_image, unlabeled_sample
from budgetseg.data.transforms import Resolution
from budgetseg.dist import SINGLE, Dist, barrier, gather_objects
from budgetseg.engine.infer import predict
from budgetseg.engine.writer import Writer, writer_threads
from budgetseg.task import InferOptions, Task, WeakLabels


class ImagesOnly:
    """`ds` as pseudo-labelling reads it: the images alone. A pool image's label files, where it has them, cost
    more to decode than the image, and only measure the pseudo-labels later (finalize)."""

    def __init__(self, ds: SegDataset):
        self.ds = ds

    def load(self, image_id: str) -> Sample:
        return unlabeled_sample(image_id, read_image(self.ds.image_path(image_id)))


def predict_pool(
    model: nn.Module,
    task: Task,
    ds: SegDataset,
    ids: list[str],
    out_dir: Path,
    cfg: PseudoConfig,
    *,
    size: int | Resolution,
    mean: tuple,
    std: tuple,
    d: Dist = SINGLE,
    workers: int = 0,
    amp: bool = False,
    writers: int | None = None,
    weak: WeakLabels | None = None,
    class_weights: tuple[float, ...] | None = None,
) -> None:
    """Pass 1 (split across DDP ranks): predict every id the task's pseudo-label folder `out_dir` has not written
    yet and let it write (on `writers` Writer threads; None: writer_threads where its writes release the GIL, else
    none: threads that hold it make the loop wait to take it back after every torch call). `workers` loader
    processes and `amp` as in engine.infer.predict; cfg.tta, cfg.scales and cfg.pair_margin, and the images'
    weak labels `weak` (IL for pseudo.image_labels, IL+C for W-RSIS) and `class_weights` (pseudo.align), as in
    InferOptions.

    Rank 0 alone reads which ids are left, before any rank writes, and tells the others. Batches are fixed by
    position in `ids` (batch k on rank k % world), and a batch with any image left to do is predicted whole: an
    image is always predicted in the same batch, interrupted run or not, so a resumed run writes the same bytes
    (a batch's composition changes the last bits of a forward pass)."""
    labels = task.pseudo_labels(out_dir)
    todo, b = set(gather_objects(d, labels.todo(ids) if d.main else None)[0]), cfg.batch_size
    batches = [ids[lo : lo + b] for lo in range(0, len(ids), b)]
    mine = [i for k, batch in enumerate(batches) if k % d.world == d.rank and todo.intersection(batch) for i in batch]
    one = Dist(0, 1, d.device)  # this rank's batches are chosen above
    options = InferOptions(cfg.tta, tuple(cfg.scales), weak, cfg.pair_margin, class_weights)
    kw = dict(size=size, mean=mean, std=std, batch_size=b, options=options, d=one)
    progress = "pseudo-labelling" if d.main else None
    stream = predict(model, ImagesOnly(ds), mine, task, progress=progress, workers=workers, amp=amp, **kw)
    # the writer's threads start at the first image: after the loader's processes have forked
    if writers is None:
        writers = writer_threads(d.device, d.world) if labels.writes_release_gil else 0
    with Writer(writers) as writer:
        for sample, pred in stream:
            writer.submit(labels.write, sample, pred)
    barrier(d)
