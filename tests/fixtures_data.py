"""Tiny on-disk datasets (VOC, SBD, COCO layouts) with known content, for the reader and statistics tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from budgetseg.data.coco import mask_to_rle
from budgetseg.data.sample import encode_label_png

H, W = 6, 8  # every fixture image is 6 rows x 8 columns; H != W catches transposes


@dataclass
class Labels:
    """What a reader should return: uint8 (H, W) semantic, bool (K, H, W) masks, (K,) classes."""

    semantic: np.ndarray
    masks: np.ndarray
    classes: np.ndarray


def write_jpeg(path: Path, h: int = H, w: int = W, color: tuple[int, int, int] = (200, 40, 90)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), color, dtype=np.uint8)).save(path, quality=95)


def write_png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        encode_label_png(arr, f)


def write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{s}\n" for s in lines))


def voc_labels() -> dict[str, tuple[Labels, np.ndarray]]:
    """id -> (expected labels, VOC object map) for three images.

    a: two persons (15) side by side and a dog (12), an ignore border row under the persons
    b: one aeroplane (1) with ignore pixels inside, plus object 2 lying on background only (must be skipped)
    c: background only
    """
    out = {}
    sem = np.zeros((H, W), np.uint8)
    obj = np.zeros((H, W), np.uint8)
    sem[0:3, 0:4] = 15
    obj[0:3, 0:2] = 1
    obj[0:3, 2:4] = 2
    sem[3, 0:4] = obj[3, 0:4] = 255
    sem[3:6, 5:8] = 12
    obj[3:6, 5:8] = 3
    masks = np.stack([obj == 1, obj == 2, obj == 3])
    out["a"] = (Labels(sem, masks, np.array([15, 15, 12])), obj)

    sem = np.zeros((H, W), np.uint8)
    obj = np.zeros((H, W), np.uint8)
    sem[1:5, 1:7] = 1
    obj[1:5, 1:7] = 1
    sem[2, 2:4] = 255  # ignore pixels under the object do not vote
    obj[5, 0:2] = 2
    out["b"] = (Labels(sem, (obj == 1)[None], np.array([1])), obj)

    sem = np.zeros((H, W), np.uint8)
    out["c"] = (Labels(sem, np.zeros((0, H, W), bool), np.zeros(0, np.int64)), sem.copy())
    return out


def write_voc(
    root: Path,
    splits: dict[str, list[str]] | None = None,
    objects: bool = True,
    labels: dict[str, tuple[Labels, np.ndarray]] | None = None,
) -> dict[str, Labels]:
    """Write a VOC layout under `root` (default voc_labels(), train = a b c, val = c); id -> labels."""
    labels = voc_labels() if labels is None else labels
    splits = {"train": ["a", "b", "c"], "val": ["c"]} if splits is None else splits
    for image_id, (lab, obj) in labels.items():
        write_jpeg(root / "JPEGImages" / f"{image_id}.jpg", *lab.semantic.shape)
        write_png(root / "SegmentationClass" / f"{image_id}.png", lab.semantic)
        if objects:
            write_png(root / "SegmentationObject" / f"{image_id}.png", obj)
    for name, ids in splits.items():
        write_lines(root / "ImageSets" / "Segmentation" / f"{name}.txt", ids)
    return {k: lab for k, (lab, _) in labels.items()}


def write_mat_struct(path: Path, name: str, fields: dict) -> None:
    """A .mat file holding MATLAB struct `name` (scipy writes a dict value as a 1x1 struct, as SBD has)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {name: fields})


def write_sbd_item(root: Path, image_id: str, lab: Labels) -> None:
    """img/<id>.jpg, cls/<id>.mat (GTcls) and inst/<id>.mat (GTinst) as in the SBD release."""
    write_jpeg(root / "img" / f"{image_id}.jpg", *lab.semantic.shape)
    write_mat_struct(root / "cls" / f"{image_id}.mat", "GTcls", {"Segmentation": lab.semantic})
    index_map = np.zeros(lab.semantic.shape, np.uint8)
    for k, m in enumerate(lab.masks, start=1):
        index_map[m] = k
    categories = np.asarray(lab.classes, np.uint8).reshape(-1, 1)  # SBD stores a K x 1 column
    write_mat_struct(root / "inst" / f"{image_id}.mat", "GTinst", {"Segmentation": index_map, "Categories": categories})


def sbd_labels() -> dict[str, Labels]:
    """d: a cat (8) and a car (7); e: one train (19); b: one car (7), unlike VOC's b."""
    sem = np.zeros((H, W), np.uint8)
    sem[0:2, 0:3] = 8
    sem[4:6, 2:8] = 7
    masks = np.stack([sem == 8, sem == 7])
    d = Labels(sem, masks, np.array([8, 7]))
    sem = np.full((H, W), 19, np.uint8)
    sem[0, :] = 0
    e = Labels(sem, (sem == 19)[None], np.array([19]))
    sem = np.full((H, W), 7, np.uint8)
    b = Labels(sem, (sem == 7)[None], np.array([7]))
    return {"d": d, "e": e, "b": b}


def write_sbd(root: Path, splits: dict[str, list[str]] | None = None) -> dict[str, Labels]:
    """Write an SBD layout (default: train = b d, val = e) under `root`; returns id -> labels."""
    labels = sbd_labels()
    splits = {"train": ["b", "d"], "val": ["e"]} if splits is None else splits
    for image_id, lab in labels.items():
        write_sbd_item(root, image_id, lab)
    for name, ids in splits.items():
        write_lines(root / f"{name}.txt", ids)
    return labels


def uncompressed_rle(mask: np.ndarray) -> dict:
    """bool (H, W) -> COCO uncompressed RLE: run lengths in column-major order, starting with a zero run."""
    flat = mask.ravel(order="F").astype(np.uint8)
    counts, value, run = [], 0, 0
    for v in flat:
        if v == value:
            run += 1
        else:
            counts.append(run)
            value, run = v, 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


def box(r0: int, r1: int, c0: int, c1: int, h: int = H, w: int = W) -> np.ndarray:
    """bool (h, w), True on rows r0..r1-1 and columns c0..c1-1."""
    m = np.zeros((h, w), bool)
    m[r0:r1, c0:c1] = True
    return m


def coco_json() -> dict:
    """Two images, categories 90 zebra, 3 car, 7 train (listed out of order) -> labels 3, 1, 2.

    Image 1 (a.jpg, 6x8): car 2x2 compressed RLE (listed first, painted last as the smallest), zebra polygon
    covering rows 0-3 x columns 0-5, train 2x2 uncompressed RLE, and a crowd region (row 0, and row 5
    columns 0-3) whose overlap with the zebra stays zebra. Image 42 (b.jpg, 5x7): no annotations.
    """
    crowd = box(0, 1, 0, W) | box(5, 6, 0, 4)
    return {
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": W, "height": H},
            {"id": 42, "file_name": "b.jpg", "width": 7, "height": 5},
        ],
        "categories": [{"id": 90, "name": "zebra"}, {"id": 3, "name": "car"}, {"id": 7, "name": "train"}],
        "annotations": [
            {
                "id": 10,
                "image_id": 1,
                "category_id": 3,
                "iscrowd": 0,
                "segmentation": mask_to_rle(box(2, 4, 2, 4)),
            },
            {
                "id": 11,
                "image_id": 1,
                "category_id": 90,
                "iscrowd": 0,
                "segmentation": [[0, 0, 6, 0, 6, 4, 0, 4]],
            },
            {
                "id": 12,
                "image_id": 1,
                "category_id": 7,
                "iscrowd": 0,
                "segmentation": uncompressed_rle(box(4, 6, 6, 8)),
            },
            {
                "id": 13,
                "image_id": 1,
                "category_id": 3,
                "iscrowd": 1,
                "segmentation": uncompressed_rle(crowd),
            },
        ],
    }


def coco_expected() -> dict[str, Labels]:
    sem = np.zeros((H, W), np.uint8)
    sem[0, :] = 255
    sem[5, 0:4] = 255
    sem[0:4, 0:6] = 3
    sem[2:4, 2:4] = 1
    sem[4:6, 6:8] = 2
    masks = np.stack([box(2, 4, 2, 4), box(0, 4, 0, 6), box(4, 6, 6, 8)])
    empty = Labels(np.zeros((5, 7), np.uint8), np.zeros((0, 5, 7), bool), np.zeros(0, np.int64))
    return {"1": Labels(sem, masks, np.array([1, 3, 2])), "42": empty}


def write_coco(json_path: Path, image_dir: Path, data: dict | None = None) -> dict[str, Labels]:
    """Write coco_json() (or `data`) and its images; returns sample id -> expected labels."""
    data = coco_json() if data is None else data
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(data))
    for im in data.get("images", []):
        write_jpeg(image_dir / im["file_name"], im["height"], im["width"])
    return coco_expected()
