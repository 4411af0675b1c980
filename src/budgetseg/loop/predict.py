"""A trained network on your own images: `budgetseg predict RUN_OR_WEIGHTS INPUT... --out DIR`.

Semantic task, per image <stem>:
  DIR/<stem>.png          label map at the image's own size (VOC-palette PNG: 0 background, k = class_names[k])
  DIR/overlay/<stem>.jpg  the image with each non-background pixel blended half and half with its class colour
Instance task:
  DIR/predictions.json    COCO-results-style list, one entry per instance (see instance_results)
  DIR/overlay/<stem>.jpg  the image with each instance blended with a colour of its own

Every input is opened (headers only) before the model runs, so a missing or unreadable file stops the call before
anything is written; should an image still fail later, the files this call wrote are removed again (and nothing
else: DIR/.lock keeps a second predict out of DIR while one writes there). DIR may not be a folder of the input
images (label maps there would be taken for photos later) nor lie inside a run folder.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from budgetseg.config import TTA_SCALES
from budgetseg.data.pool import ImageFiles
from budgetseg.data.sample import IMAGE_EXTS, image_size
from budgetseg.data.transforms import Resolution
from budgetseg.dist import Dist, loader_workers
from budgetseg.engine.infer import predict
from budgetseg.errors import BudgetsegError, input_error
from budgetseg.io import atomic_write, check_output, folder_lock, remove_stale_temp_files
from budgetseg.modelfile import (
    NETS,
    build_from_meta,
    check_meta,
    check_tta,
    load_model_file,
    meta_from_run,
    tta_summary,
    with_stop_threshold,
)
from budgetseg.overlay import blend, palette_array, save_jpeg
from budgetseg.task import InferOptions, PredictionFiles, Task


@dataclass
class Trained:
    """A network ready to run: where its file is, the network (eval mode, CPU), its task object and meta."""

    path: Path
    model: nn.Module
    task: Task
    meta: dict


def run_model_path(run: Path, net: str | None) -> Path:
    """<run>/<net>/model.pt (net default: segmenter), with an error that says what the run does have."""
    if not (run / "config.yaml").is_file() and not any((run / n).is_dir() for n in NETS):
        raise input_error(run, "neither a run folder (no config.yaml) nor a model file")
    net = net or "segmenter"
    if net not in NETS:
        raise BudgetsegError(f"--net {net!r}: expected one of {', '.join(NETS)}")
    path = run / net / "model.pt"
    if path.is_file():
        return path
    other = NETS[1 - NETS.index(net)]
    hint = f"; use --net {other}" if (run / other / "model.pt").is_file() else ""
    raise BudgetsegError(f"run {run} has no trained {net}{hint}")


def load_trained(source: str | Path, net: str | None = None, stop_threshold: float | None = None) -> Trained:
    """The network of a run folder (<run>/<net>/model.pt, net default segmenter) or of a model.pt file.

    net, given with a model file, must be the network the file holds. A W-RSIS annotator is refused: it needs
    the IL+C labels (classes and counts) of every image it segments. stop_threshold: an instance network's
    instead of its own (model.stop_threshold, which its file keeps).
    """
    source = Path(source)
    path = run_model_path(source, net) if source.is_dir() else source
    state, meta = load_model_file(path)
    if meta is None:
        meta = meta_from_run(path)
    check_meta(path, meta)
    if net is not None and meta["net"] != net:
        raise input_error(path, f"holds the {meta['net']}, not the {net}")
    if meta["net"] == "annotator" and meta["model"].get("class_inputs"):
        raise input_error(
            path, "a W-RSIS annotator needs the IL+C labels (classes and counts) of each image; use --net segmenter"
        )
    meta = with_stop_threshold(path, meta, stop_threshold)
    model, task = build_from_meta(path, state, meta)
    return Trained(path, model, task, meta)


def list_images(inputs: list[str | Path]) -> list[Path]:
    """Image files of `inputs` (files, or folders whose image files are taken in name order, not recursively),
    in input order, each once. One-line errors for a missing input, a folder without images, no images at
    all, and two images of one name stem (their outputs would collide)."""
    found: dict[Path, Path] = {}
    for item in map(Path, inputs):
        if item.is_dir():
            files = sorted(
                f
                for f in item.iterdir()
                if f.is_file() and f.suffix.lower() in IMAGE_EXTS and not f.name.startswith(".")
            )
            if not files:
                raise input_error(item, f"no images ({', '.join(e[1:] for e in IMAGE_EXTS)}) in this folder")
        elif item.is_file():
            files = [item]
        else:
            raise input_error(item, "no such image file or folder")
        for f in files:
            found.setdefault(f.resolve(), f)
    if not found:
        raise BudgetsegError("no input images")
    stems: dict[str, Path] = {}
    for f in found.values():
        seen = stems.setdefault(f.stem.casefold(), f)  # casefold: on some file systems A.png is a.png
        if seen is not f:
            raise input_error(f, f"same name as {seen}; their outputs would overwrite each other (rename one)")
    return list(found.values())


def output_paths(out: Path, images: list[Path], files: PredictionFiles) -> list[Path]:
    """Every file predict_images will write for `images`: the task's files, then the overlays."""
    return files.paths(images) + [out / "overlay" / f"{p.stem}.jpg" for p in images]


def check_out(out: Path, images: list[Path], files: PredictionFiles) -> None:
    """One-line errors when --out is a file, lies in a run folder, holds input images (label maps there would be
    taken for photos later) or would overwrite one of the input images."""
    check_output(out, "--out", inputs=images, folder=True)
    inputs = {p.resolve(): p for p in images}
    for path in output_paths(out, images, files):
        if path.resolve() in inputs:
            raise input_error(out, f"writing there would overwrite the input image {inputs[path.resolve()]}")


def write_predictions(stream, images: ImageFiles, out: Path, task: Task, written: list[Path]) -> dict:
    """Write the (sample, prediction) pairs of `stream` into `out` (see the module doc), each file atomically, and
    list them in `written` as they land; returns the task's summary entries (its PredictionFiles')."""
    palette, files = palette_array(), task.prediction_files(out)
    for k, (sample, pred) in enumerate(stream):
        path, image = images.image_path(sample.id), sample.image
        written += files.add(k, path, pred)
        index, first = task.overlay_index(pred, image.shape[:2])
        shown = blend(image, index, palette, first)
        overlay = out / "overlay" / f"{path.stem}.jpg"
        atomic_write(overlay, lambda f, s=shown: save_jpeg(s, f), fsync=False)  # a lost file is recomputed by rerunning
        written.append(overlay)
    done, summary = files.close()
    written += done
    return summary


def write_owned(out: Path, images: list[Path], files: ImageFiles, task: Task, stream) -> dict:
    """write_predictions into `out` under its lock (a second predict into `out` is refused meanwhile); should it
    fail, the files it wrote are removed again, and the folders it made when they are empty. Returns the task's
    summary entries."""
    created = [d for d in (out, out / "overlay") if not d.exists()]
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        with folder_lock(out):
            remove_stale_temp_files(out, set(output_paths(out, images, task.prediction_files(out))))
            try:
                return write_predictions(stream, files, out, task, written)
            except BaseException:
                for path in written:  # only what this call wrote
                    path.unlink(missing_ok=True)
                raise
    except BaseException:
        for d in created[::-1]:
            with contextlib.suppress(OSError):  # not empty: another call's files are there
                d.rmdir()
        raise


def pick_device(device: str | torch.device | None) -> torch.device:
    """`device`, by default cuda when a GPU is visible, else cpu; one-line errors for a GPU that is not there."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BudgetsegError(f"--device {device}: no CUDA GPU visible (use cpu)")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise BudgetsegError(f"--device {device}: only {torch.cuda.device_count()} CUDA GPU(s) visible")
    return device


def predict_images(
    source: str | Path,
    inputs: list[str | Path],
    out: str | Path,
    net: str | None = None,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    progress: bool = True,
    tta: bool = False,
    scales: tuple[float, ...] = TTA_SCALES,
    stop_threshold: float | None = None,
) -> dict:
    """Run the network of `source` (a run folder or a model.pt, see load_trained) on the images of `inputs`
    (see list_images) and write its predictions into `out` (see the module doc). Images of any size are seen
    whole at the working resolution the network was trained at (letterboxed to its crop side where that is fit)
    and their predictions resized back.

    device: default cuda when available, else cpu. tta (semantic): average the class probabilities over the
    mirror and the input `scales` (with the default three, 7.6x the compute of one pass; measured gains in
    docs/results/tta/README.md). stop_threshold (instance): instead of the network's own (model.stop_threshold).
    Returns a summary: images, out, net, task, model, device, seconds, tta (null or {"mirror", "scales"}), and
    labels (semantic) or instances, predictions, categories and stop_threshold (instance).
    """
    if batch_size < 1:
        raise BudgetsegError(f"--batch-size must be >= 1, got {batch_size}")
    t0 = time.perf_counter()
    trained = load_trained(source, net, stop_threshold)
    meta, task = trained.meta, trained.task
    scales = tuple(scales) if tta else (1.0,)
    check_tta(trained.path, meta, tta, scales)
    images = list_images(inputs)
    for p in images:  # one-line error naming an unreadable file, before anything is written
        image_size(p)
    out = Path(out)
    check_out(out, images, task.prediction_files(out))
    device = pick_device(device)
    files = ImageFiles(images, list(meta["class_names"]))
    # a progress bar on a terminal only, so logs and captured stderr keep just the messages
    shown_progress = "predicting" if progress and sys.stderr.isatty() else None
    one = Dist(device=device)
    size = Resolution.of_meta(meta)
    kw = dict(size=size, mean=tuple(meta["mean"]), std=tuple(meta["std"]), batch_size=batch_size, d=one)
    kw |= dict(options=InferOptions(tta, scales), workers=loader_workers(None, one))
    stream = predict(trained.model.to(device), files, files.ids, task, progress=shown_progress, **kw)
    extra = write_owned(out, images, files, task, stream)
    summary = {
        "images": len(images),
        "out": str(out),
        "net": meta["net"],
        "task": meta["task"],
        "model": str(trained.path),
        "device": str(device),
        "seconds": round(time.perf_counter() - t0, 2),
        "overlays": str(out / "overlay"),
        "tta": tta_summary(tta, scales),
    }
    return summary | extra
