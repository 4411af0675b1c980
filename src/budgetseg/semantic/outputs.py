"""What the semantic task writes outside a run folder: predict's label maps, and its labels in an export."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from budgetseg.data.sample import IGNORE, encode_label_png
from budgetseg.io import atomic_write
from budgetseg.task import ExportItem


@dataclass
class SemanticPredictionFiles:
    """OUT/<stem>.png: each image's label map at its own size (VOC-palette PNG: 0 background, k = class k)."""

    out: Path
    count: int = 0

    def paths(self, images: list[Path]) -> list[Path]:
        return [self.out / f"{p.stem}.png" for p in images]

    def add(self, k: int, image: Path, prediction) -> list[Path]:
        path = self.out / f"{image.stem}.png"
        # all-or-nothing rename, no fsync: a file lost to a power cut is recomputed by running again
        atomic_write(path, lambda f, m=prediction.label: encode_label_png(m, f), fsync=False)
        self.count += 1
        return [path]

    def close(self) -> tuple[list[Path], dict]:
        return [], {"labels": self.count}


@dataclass
class SemanticItem(ExportItem):
    """A semantic label map; pseudo-labels carry f_theta's confidence too."""

    confidence: np.ndarray | None = None  # float32 (H, W) in [0, 1]: semantic pseudo-labels' confidence

    def mean_score(self, mask: np.ndarray | None = None) -> float | None:
        """Mean confidence of a pseudo-label (over `mask`), or None for strong labels."""
        if self.confidence is None:
            return None
        conf = self.confidence if mask is None else self.confidence[mask]
        return round(float(conf.mean()), 5) if conf.size else None

    def regions(self, num_classes: int, components: bool) -> list[tuple[int, np.ndarray]]:
        """[(class id, bool (H, W) mask)]: per class from `first` (class 0 too where the label set has no
        background), its 8-connected components with `components`; then the ignored pixels as (IGNORE, mask)."""
        out = []
        for c in range(self.first, num_classes):
            mask = self.semantic == c
            if not mask.any():
                continue
            if not components:
                out.append((c, mask))
                continue
            comp, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
            out += [(c, comp == k) for k in range(1, n + 1)]
        ignored = self.semantic == IGNORE
        return out + ([(IGNORE, ignored)] if ignored.any() else [])

    def object_map(self) -> None:
        return None

    def coco_regions(self, num_classes: int) -> list[tuple[int, np.ndarray, float | None, bool]]:
        """One region per 8-connected component of each class; the ignored pixels as one crowd region."""
        return [(c, m, self.mean_score(m), c == IGNORE) for c, m in self.regions(num_classes, components=True)]

    def brush_regions(self, num_classes: int) -> tuple[list[tuple[int, np.ndarray, float | None]], float | None]:
        """One brush per class and one for the ignored pixels; the mean confidence as the image's score."""
        regions = [(c, m, self.mean_score(m)) for c, m in self.regions(num_classes, components=False)]
        return regions, self.mean_score()

    def index_map(self) -> np.ndarray:
        return self.semantic

    def legend(self, class_names: list[str]) -> list[tuple[int, str]]:
        return [(k, name) for k, name in enumerate(class_names) if k >= self.first]
