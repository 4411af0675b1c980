"""End-to-end instance runs (RSIS) on a COCO-format dataset written here (not fashion-scenes)."""

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from budgetseg.config import load_config
from budgetseg.data.coco import mask_to_rle
from budgetseg.pipeline import run
from budgetseg.report import report

pytestmark = pytest.mark.slow


def write_shapes_coco(root, split: str, n: int, seed: int, size: int = 64) -> None:
    """Squares (category 5, polygons) and discs (category 9, RLE) on noise: root/<split>/*.jpg and
    root/annotations/instances_<split>.json."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images, anns = [], []
    for i in range(n):
        img = rng.integers(0, 80, (size, size, 3)).astype(np.uint8)
        taken = np.zeros((size, size), bool)
        for _ in range(rng.integers(1, 4)):
            r = int(rng.integers(6, 12))
            cy, cx = (int(v) for v in rng.integers(r, size - r, 2))
            square = rng.random() < 0.5
            m = (np.abs(yy - cy) < r) & (np.abs(xx - cx) < r) if square else (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
            if (m & taken).any():
                continue
            taken |= m
            img[m] = (220, 60, 60) if square else (60, 200, 220)
            seg = (
                [
                    [
                        cx - r + 0.5,
                        cy - r + 0.5,
                        cx + r - 0.5,
                        cy - r + 0.5,
                        cx + r - 0.5,
                        cy + r - 0.5,
                        cx - r + 0.5,
                        cy + r - 0.5,
                    ]
                ]
                if square
                else mask_to_rle(m)
            )
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": 5 if square else 9,
                    "segmentation": seg,
                    "area": int(m.sum()),
                    "bbox": [cx - r, cy - r, 2 * r, 2 * r],
                    "iscrowd": 0,
                }
            )
        (root / split).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / split / f"{i:03d}.jpg", quality=95)
        images.append({"id": i + 1, "file_name": f"{i:03d}.jpg", "height": size, "width": size})
    cats = [{"id": 9, "name": "disc"}, {"id": 5, "name": "square"}]
    (root / "annotations").mkdir(exist_ok=True)
    (root / "annotations" / f"instances_{split}.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats})
    )


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    write_shapes_coco(root, "train", 24, seed=0)
    write_shapes_coco(root, "val", 8, seed=1)
    return root


def test_instance_run_on_a_coco_dataset(shapes, tmp_path):
    cfg = load_config(
        "configs/fashion_instance.yaml",
        [
            "data.format=coco",
            f"data.root={shapes}",
            "data.size=64",
            "n_strong=8",
            "model.steps=4",
            "annotator.iterations=8",
            "annotator.batch_size=4",
            "annotator.epoch_iters=4",
            "segmenter.iterations=8",
            "segmenter.batch_size=4",
            "segmenter.epoch_iters=4",
        ],
    )
    out = tmp_path / "run"
    res = run(cfg, out)
    assert res["task"] == "instance" and (res["n_strong"], res["n_pseudo"]) == (8, 16)
    for net in ("annotation_net", "segmentation_net", "pseudo_labels"):
        assert {"ap", "ap50", "ap75", "ap_r", "ap_r_mean"} <= set(res[net])
        assert 0.0 <= res[net]["ap50"] <= 1.0
    assert res["annotation_net"]["gt_instances"] > 8  # the val ground truth was read
    coco = COCO(str(out / "pseudo" / "pseudo_labels.json"))
    assert sorted(c["name"] for c in coco.loadCats(coco.getCatIds())) == ["disc", "square"]
    assert len(coco.getImgIds()) == 16
    assert len(list((out / "pseudo" / "pred").glob("*.json"))) == 16
    rep = report([out], tmp_path / "report")
    assert "AP50" in rep["table"] and (tmp_path / "report" / "grid.png").is_file()
