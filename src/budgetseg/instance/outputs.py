"""What the instance task writes outside a run folder: predict's COCO-results file, and its labels in an export."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from budgetseg.data.coco import category_map, coco_categories, mask_to_rle
from budgetseg.data.sample import IGNORE
from budgetseg.instance.matching import instance_target
from budgetseg.io import write_json
from budgetseg.task import ExportItem, Instance


def instance_results(
    image_id: int, file_name: str, preds: list[Instance], class_names: list[str], category_ids: list[int] | None = None
) -> list[dict]:
    """COCO-results-style entries, most confident first: image_id, file_name, category_id (the dataset's COCO
    category id of the class where the network was trained on COCO, `category_ids`; else the index into
    class_names, background 0), category_name, segmentation (compressed RLE at the image's size), bbox ([x, y, w, h]
    in px), area (px), score in [0, 1]."""
    coco_id = category_map(class_names, category_ids)
    items = []
    for mask, c, s in sorted(preds, key=lambda p: -p[2]):
        rle = mask_to_rle(mask)
        items.append(
            {
                "image_id": image_id,
                "file_name": file_name,
                "category_id": coco_id.get(int(c), int(c)),
                "category_name": class_names[c],
                "segmentation": rle,
                "bbox": [round(float(v), 2) for v in mask_utils.toBbox(rle)],
                "area": int(mask.sum()),
                "score": round(float(s), 5),
            }
        )
    return items


@dataclass
class InstancePredictionFiles:
    """OUT/predictions.json: a COCO-results-style list, one entry per instance (instance_results), written last; the
    summary names its categories (COCO's {"id", "name"} of each class) and the stop threshold."""

    out: Path
    class_names: list[str]
    category_ids: list[int] | None = None  # the dataset's COCO category ids of classes 1..K; None: 1..K
    stop_threshold: float | None = None  # the network's (None: W-RSIS, which is given the counts)
    results: list[dict] = field(default_factory=list)

    def paths(self, images: list[Path]) -> list[Path]:
        return [self.out / "predictions.json"]

    def add(self, k: int, image: Path, prediction: list[Instance]) -> list[Path]:
        self.results += instance_results(k + 1, image.name, prediction, self.class_names, self.category_ids)
        return []

    def close(self) -> tuple[list[Path], dict]:
        path = self.out / "predictions.json"
        write_json(path, self.results)
        categories = [{"id": c["id"], "name": c["name"]} for c in coco_categories(self.class_names, self.category_ids)]
        summary = {"instances": len(self.results), "predictions": str(path), "categories": categories}
        return [path], summary | {"stop_threshold": self.stop_threshold}


@dataclass
class ObjectLabel:
    label: int  # class id 1..C
    score: float | None  # pseudo-labels: the instance's score; strong labels: None
    mask: np.ndarray  # bool (H, W): the visible part (unsure instances: the part left ignored)


@dataclass
class InstanceItem(ExportItem):
    """An image's objects, each the part of it that stays visible, and (pseudo-labels) the unsure ones."""

    instances: list[ObjectLabel] = field(default_factory=list)
    unsure: list[ObjectLabel] = field(default_factory=list)  # below-threshold pseudo instances (don't care)

    def rest(self) -> np.ndarray:
        """bool (H, W): ignored pixels that no unsure instance covers (strong labels: the dataset's)."""
        rest = self.semantic == IGNORE
        for i in self.unsure:
            rest &= ~i.mask
        return rest

    def object_map(self) -> np.ndarray:
        objects = np.zeros(self.semantic.shape, np.uint8)
        for k, inst in enumerate(self.instances, start=1):
            objects[inst.mask] = k
        objects[self.semantic == IGNORE] = IGNORE
        return objects

    def coco_regions(self, num_classes: int) -> list[tuple[int, np.ndarray, float | None, bool]]:
        """One annotation per instance; unsure ones are crowd regions of their class, the rest of the ignored
        pixels one crowd region of the ignore category."""
        regions = [(i.label, i.mask, i.score, False) for i in self.instances]
        regions += [(i.label, i.mask, i.score, True) for i in self.unsure]
        rest = self.rest()
        return regions + ([(IGNORE, rest, None, True)] if rest.any() else [])

    def brush_regions(self, num_classes: int) -> tuple[list[tuple[int, np.ndarray, float | None]], float | None]:
        """One brush per instance; unsure ones and the rest of the ignored pixels labelled ignore; the mean
        instance score as a pseudo-label's score."""
        regions = [(i.label, i.mask, i.score) for i in self.instances]
        regions += [(IGNORE, i.mask, i.score) for i in self.unsure]
        regions.append((IGNORE, self.rest(), None))
        scores = [i.score for i in self.instances + self.unsure]
        return regions, round(float(np.mean(scores)), 5) if self.source == "pseudo" and scores else None

    def index_map(self) -> np.ndarray:
        """1, 2, ... on the pixels of each (visible) instance, 0 elsewhere, 255 where ignored."""
        index = np.zeros(self.semantic.shape, np.uint8)
        for k, inst in enumerate(self.instances):
            index[inst.mask] = k % 254 + 1
        return np.where(self.semantic == IGNORE, IGNORE, index).astype(np.uint8)

    def legend(self, class_names: list[str]) -> list[tuple[int, str]]:
        return [(1, "each object its own colour; classes: " + ", ".join(class_names[1:]))]


def instance_item(
    image_id: str, source: str, image: Path, masks: np.ndarray, classes, scores, ignore: np.ndarray, unsure=()
) -> InstanceItem:
    """An instance-task item: masks bool (K, H, W) painted largest first (ties: later over earlier), `ignore` (H, W)
    over all, as instance.matching.instance_target; `unsure` [(mask, class, score)] below-threshold instances."""
    h, w = ignore.shape
    target = instance_target(masks, np.asarray(classes, np.int64), h, w, ignore)
    objects = target[..., 1]
    instances = [ObjectLabel(int(c), s, objects == k) for k, (c, s) in enumerate(zip(classes, scores, strict=True), 1)]
    hidden = [ObjectLabel(int(c), s, m & ignore) for m, c, s in unsure]
    return InstanceItem(image_id, source, image, target[..., 0].copy(), 1, instances=instances, unsure=hidden)
