"""Which pseudo-labels to correct first: per pseudo-labelled image, the errors f_theta itself expects in it.

Semantic: the share of its pixels expected wrong, 1 - the mean of its confidence map (pseudo/conf/<id>.png, f_theta's
top class probability per pixel). Instance: the number of its pseudo-instances expected wrong, the sum of 1 - score
over them (pseudo_labels.json, the unsure ones included), 1 where f_theta found none (a missed object, likely).
The most expected errors first. How well that finds the wrong pseudo-labels: benchmarks/review_order.py (the
instance sum finds twice the errors random picks do; the mean score finds 1.5 times).
"""

from __future__ import annotations

from pathlib import Path

from budgetseg.data.sample import read_label_png
from budgetseg.errors import input_error
from budgetseg.pseudo_instances import load_pseudo_labels

SCORE_NAMES = {
    "semantic": "share of pixels expected wrong: 1 - mean confidence",
    "instance": "instances expected wrong: sum of 1 - score (1: none found)",
}


def review_scores(pseudo_dir: Path, task: str, ids: list[str], preds: dict | None = None) -> dict[str, float]:
    """id -> expected errors (higher: review first) of the pseudo-labels in `pseudo_dir` for the images `ids`;
    instance task: `preds`, load_pseudo_labels' dict of its pseudo_labels.json, where the caller has it."""
    if task == "semantic":
        out = {}
        for i in ids:
            path = pseudo_dir / "conf" / f"{i}.png"
            if not path.is_file():
                raise input_error(path, "confidence map is missing (pseudo-labels made by an older budgetseg?)")
            out[i] = round(1 - float(read_label_png(path).mean()) / 255, 5)
        return out
    if preds is None:
        preds = load_pseudo_labels(pseudo_dir / "pseudo_labels.json") if ids else {}
    missing = [i for i in ids if i not in preds]
    if missing:
        raise input_error(pseudo_dir / "pseudo_labels.json", f"no entry for unlabeled image {missing[0]!r}")
    return {i: round(sum(1 - s for *_, s in preds[i]), 5) if preds[i] else 1.0 for i in ids}


def review_order(scores: dict[str, float]) -> list[str]:
    """The ids, the most expected errors first (ties: by id, so the order does not depend on the dict's)."""
    return sorted(scores, key=lambda i: (-scores[i], i))
