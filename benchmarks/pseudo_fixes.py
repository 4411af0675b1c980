"""Label-free corrections of a finished semantic run's pseudo-labels, scored against the pool's ground truth.

Re-runs the run's f_theta over its first --images unlabeled images (with the run's TTA and scales) and prints,
for the pseudo-labels as made and for four corrections that need no labels beyond the N strong images:
  vote       every 8-connected foreground component takes the class with the largest summed probability
             (an object of one class, whose pixels f_theta split between classes, becomes one class);
  align      distribution alignment: per-class factors on the probabilities, fitted so that the argmax's
             class shares over the images match the strong images' pixel shares (pseudo.align's
             semantic.align.fit_factors, here on every image scored);
  align mean ReMixMatch's alignment: the probabilities times the strong shares over their mean;
  component  the class quantile applied to each component's mean confidence instead of each pixel's (an
             object's pixels kept or dropped together).
mIoU for the first three, and for the filter the share of pixels kept and the accuracy of the kept foreground.
A label set without a background class (CamVid) has no foreground components: there only the alignments are measured.

    GLIBC_TUNABLES=... .venv/bin/python benchmarks/pseudo_fixes.py runs/long_sf25/n0200 [--images 600]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from budgetseg.config import load_config
from budgetseg.data.readers import open_split
from budgetseg.data.transforms import Resolution
from budgetseg.dist import Dist
from budgetseg.engine.infer import predict
from budgetseg.engine.resize import image_probs
from budgetseg.modelfile import build_from_meta, load_model_file
from budgetseg.semantic.align import Probabilities, fit_factors
from budgetseg.semantic.metrics import SemanticEvaluator
from budgetseg.task import InferOptions

EIGHT = np.ones((3, 3), bool)  # 8-connectivity


class ImageProbabilities(Probabilities):
    """pseudo.align's Probabilities at each image's own size (float16 (C, H, W)), to score against its labels."""

    def decode_batch(self, probs: torch.Tensor, hws: list, sizes: list, options: InferOptions) -> list[np.ndarray]:
        pairs = enumerate(zip(hws, sizes, strict=True))
        return [image_probs(probs, j, hw, size).half().cpu().numpy() for j, (hw, size) in pairs]


def vote(p: np.ndarray) -> np.ndarray:
    """Labels (H, W) with each foreground component of the argmax given its largest summed class probability."""
    label = p.argmax(0)
    comp, n = ndimage.label(label > 0, structure=EIGHT)
    if n:
        idx = np.arange(1, n + 1)
        sums = np.stack([ndimage.sum(p[c], comp, idx) for c in range(1, len(p))])  # (C-1, n)
        fg = comp > 0
        label[fg] = (sums.argmax(0) + 1)[comp[fg] - 1]
    return label


def component_confidence(p: np.ndarray) -> np.ndarray:
    """(H, W): each foreground pixel's component's mean max-probability; background pixels keep their own."""
    label, conf = p.argmax(0), p.max(0).astype(np.float64)
    comp, n = ndimage.label(label > 0, structure=EIGHT)
    out = conf.copy()
    if n:
        fg = comp > 0
        out[fg] = ndimage.mean(conf, comp, np.arange(1, n + 1))[comp[fg] - 1]
    return out


def kept_stats(labels, scores, truths, q: float, num_classes: int) -> tuple[float, float]:
    """(kept share, accuracy of the kept foreground) when each class drops its q share of lowest scores."""
    lab, sc = np.concatenate([x.ravel() for x in labels]), np.concatenate([x.ravel() for x in scores])
    gt = np.concatenate([x.ravel() for x in truths])
    thr = np.array([np.quantile(sc[lab == c], q) if (lab == c).any() else 0.0 for c in range(num_classes)])
    keep = (sc >= thr[lab]) & (gt != 255)
    fg = keep & (lab > 0)
    return float(keep.mean()), float((lab[fg] == gt[fg]).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a finished semantic run folder")
    ap.add_argument("--images", type=int, default=600, help="the first this many unlabeled images")
    a = ap.parse_args()
    if a.images < 1:
        raise SystemExit(f"pseudo_fixes: --images {a.images}: give at least 1")
    need = [a.run / n for n in ("config.yaml", "split/unlabeled.txt", "split/strong.txt", "annotator/model.pt")]
    if missing := [str(p) for p in need if not p.is_file()]:
        raise SystemExit(f"pseudo_fixes: {missing[0]} is missing: give a semantic run folder with a trained f_theta")
    rc = load_config(a.run / "config.yaml")
    pool = open_split(rc.data, rc.data.train_split)
    ids = (a.run / "split" / "unlabeled.txt").read_text().split()[: a.images]
    strong = (a.run / "split" / "strong.txt").read_text().split()
    state, meta = load_model_file(a.run / "annotator" / "model.pt")
    model, task = build_from_meta(a.run / "annotator" / "model.pt", state, meta)
    names, c = list(meta["class_names"]), len(meta["class_names"])
    kw = dict(
        size=Resolution.of_meta(meta), mean=tuple(meta["mean"]), std=tuple(meta["std"]), d=Dist(), progress="f_theta"
    )
    options = InferOptions(rc.pseudo.tta, tuple(rc.pseudo.scales))
    stream = predict(model, pool, ids, ImageProbabilities(task), options=options, **kw)
    probs = [p for _, p in stream]
    truths = [pool.load(i, with_image=False).semantic for i in ids]
    st = np.concatenate([pool.load(i, with_image=False).semantic.ravel() for i in strong])
    st = st[(st != 255) & (st < c)]
    prior = np.bincount(st, minlength=c) / max(st.size, 1)
    # pseudo.align fits the same factors on a sample of the pool (its prior reads box-mask estimates where a run
    # trained on boxes; this one reads the strong images' masks)
    w = fit_factors(probs, prior)
    mean = np.mean([p.mean((1, 2)) for p in probs], axis=0)  # ReMixMatch aligns these instead
    w_mean = prior / np.maximum(mean, 1e-12)
    background = meta.get("background", True) is not False
    keys = ("as made", "vote", "align", "align mean")
    evs = {k: SemanticEvaluator(names) for k in keys if background or k != "vote"}
    for p, gt in zip(probs, truths, strict=True):
        evs["as made"].process(gt, p.argmax(0))
        evs["align"].process(gt, (p * w[:, None, None]).argmax(0))
        evs["align mean"].process(gt, (p * w_mean[:, None, None]).argmax(0))
        if background:
            evs["vote"].process(gt, vote(p))
    how = f"TTA {rc.pseudo.tta}, scales {rc.pseudo.scales}"
    print(f"{a.run}: f_theta's pseudo-labels of {len(ids)} unlabeled images ({how})")
    for k, ev in evs.items():
        r = ev.evaluate()
        per_class = ", ".join(f"{n} {'-' if v is None else f'{100 * v:.1f}'}" for n, v in r["per_class_iou"].items())
        print(f"  {k:9s} mIoU {100 * r['miou']:.2f} ({per_class})")
    print("  prior (strong pixels): " + ", ".join(f"{n} {100 * x:.2f}" for n, x in zip(names, prior, strict=True)))
    print("  mean probabilities: " + ", ".join(f"{n} {100 * x:.2f}" for n, x in zip(names, mean, strict=True)))
    print("  align factors: " + ", ".join(f"{n} {x:.2f}" for n, x in zip(names, w, strict=True)))
    if not background:
        return
    q = rc.pseudo.class_quantile or 0.2
    labels = [p.argmax(0) for p in probs]
    fg_truth = sum(int(((gt > 0) & (gt != 255)).sum()) for gt in truths)
    missed = sum(int(((gt > 0) & (gt != 255) & (lab == 0)).sum()) for gt, lab in zip(truths, labels, strict=True))
    print(f"  foreground pixels labelled background: {100 * missed / fg_truth:.1f} %")
    for name, scores in (("pixel", [p.max(0) for p in probs]), ("component", [component_confidence(p) for p in probs])):
        kept, acc = kept_stats(labels, scores, truths, q, c)
        print(f"  {name:9s} class quantile {q}: {100 * kept:.1f} % kept, kept foreground {100 * acc:.1f} % right")
    kept, acc = kept_stats(labels, [np.ones(x.shape) for x in labels], truths, 0.0, c)
    print(f"  {'none':9s} {100 * kept:.1f} % kept, foreground {100 * acc:.1f} % right")


if __name__ == "__main__":
    main()
