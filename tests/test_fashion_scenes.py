import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from budgetseg.data import fashion_scenes as fs
from budgetseg.data.sample import IGNORE, read_label_png
from budgetseg.errors import BudgetsegError

SMALL = fs.FashionScenesConfig(train=20, val=10, size=64, seed=3)


def _idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, arr.ndim]) + np.array(arr.shape, dtype=">u4").tobytes()
    return header + arr.astype(np.uint8).tobytes()


def _fake_items(rng: np.random.Generator, n: int) -> np.ndarray:
    """uint8 (n, 28, 28): textured ellipses, enough like clothes for the cut-out code."""
    yy, xx = np.mgrid[:28, :28]
    items = np.zeros((n, 28, 28), np.uint8)
    for i in range(n):
        ry, rx = rng.uniform(4, 13, size=2)
        inside = ((yy - 13.5) / ry) ** 2 + ((xx - 13.5) / rx) ** 2 <= 1
        items[i][inside] = rng.integers(60, 256, size=inside.sum())
    return items


@pytest.fixture(scope="module")
def fake_mnist(tmp_path_factory) -> Path:
    """A Fashion-MNIST folder whose train split holds labels 0-4 only and test split labels 5-9 only,
    so the classes in a build show which split each object came from. Train is gzipped, test is not."""
    folder = tmp_path_factory.mktemp("fmnist")
    rng = np.random.default_rng(0)
    for split, labels in (("train", np.arange(100) % 5), ("t10k", 5 + np.arange(50) % 5)):
        images_raw, labels_raw = _idx_bytes(_fake_items(rng, len(labels))), _idx_bytes(labels)
        if split == "train":
            (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(images_raw, mtime=0))
            (folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels_raw, mtime=0))
        else:
            (folder / "t10k-images-idx3-ubyte").write_bytes(images_raw)
            (folder / "t10k-labels-idx1-ubyte").write_bytes(labels_raw)
    return folder


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes(tmp_path, fake_mnist):
    a = fs.build_fashion_scenes(tmp_path / "a", SMALL, fake_mnist, progress=False)
    b = fs.build_fashion_scenes(tmp_path / "b", SMALL, fake_mnist, progress=False)
    files_a = _files(a)
    assert len(files_a) == 3 * 30 + 6
    assert files_a == _files(b)
    other = fs.FashionScenesConfig(train=20, val=10, size=64, seed=4)
    c = _files(fs.build_fashion_scenes(tmp_path / "c", other, fake_mnist, progress=False))
    assert c["JPEGImages/train_00000.jpg"] != files_a["JPEGImages/train_00000.jpg"]
    # The val count must not move the training images.
    fewer_val = fs.FashionScenesConfig(train=20, val=3, size=64, seed=3)
    d = _files(fs.build_fashion_scenes(tmp_path / "d", fewer_val, fake_mnist, progress=False))
    assert all(d[k] == v for k, v in files_a.items() if k.startswith("JPEGImages/train_"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c", "d"]  # no temp folders left


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' decode under numpy 2
def test_layout_and_masks_agree(tmp_path, fake_mnist):
    out = fs.build_fashion_scenes(tmp_path / "out", SMALL, fake_mnist, progress=False)
    assert (out / "classes.txt").read_text().split() == fs.FASHION_CLASSES
    assert json.loads((out / "fashion_scenes.json").read_text())["config"]["seed"] == 3
    for split, pool_classes in (("train", {1, 2, 3, 4, 5}), ("val", {6, 7, 8, 9, 10})):
        ids = (out / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()
        assert ids == [f"{split}_{i:05d}" for i in range(20 if split == "train" else 10)]
        coco = json.loads((out / "annotations" / f"instances_{split}.json").read_text())
        assert [c["id"] for c in coco["categories"]] == list(range(1, 11))
        for image, image_id in zip(coco["images"], ids, strict=True):
            assert image["file_name"] == f"{image_id}.jpg" and (out / "JPEGImages" / image["file_name"]).is_file()
            sem = read_label_png(out / "SegmentationClass" / f"{image_id}.png")
            obj = read_label_png(out / "SegmentationObject" / f"{image_id}.png")
            assert sem.shape == obj.shape == (64, 64)
            anns = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
            assert sorted(set(np.unique(obj)) - {0, IGNORE}) == list(range(1, len(anns) + 1))
            np.testing.assert_array_equal(sem == 0, obj == 0)
            np.testing.assert_array_equal(sem == IGNORE, obj == IGNORE)
            for k, ann in enumerate(anns, start=1):
                assert ann["category_id"] in pool_classes  # objects come from this split's pool only
                mask = mask_utils.decode(ann["segmentation"]).astype(bool)
                np.testing.assert_array_equal(mask, obj == k)
                assert ann["area"] == mask.sum() and (sem[mask] == ann["category_id"]).all()


def test_hidden_objects_become_ignore(fake_mnist, monkeypatch):
    """Big items and a single placement try force heavy occlusion: what is left of a hidden item is
    IGNORE, never a label of the wrong object."""
    monkeypatch.setattr(fs, "SCALE_RANGE", (0.8, 0.9))
    monkeypatch.setattr(fs, "PLACE_TRIES", 1)
    items, labels = fs.load_fashion_mnist(fake_mnist, "train")
    photos = [np.full((40, 50, 3), 128, np.uint8)]
    rng = np.random.default_rng(0)
    scenes = [fs.render_scene(rng, items, labels, photos, 48) for _ in range(60)]
    assert any((s.semantic == IGNORE).any() for s in scenes)
    for s in scenes:
        covered = s.instance_masks.any(axis=0)
        assert not (covered & (s.semantic == IGNORE)).any()
        assert (((s.semantic > 0) & (s.semantic != IGNORE)) == covered).all()
        obj = fs.object_map(s)
        assert ((obj == IGNORE) == (s.semantic == IGNORE)).all()
        assert set(np.unique(obj).tolist()) - {0, IGNORE} == set(range(1, len(s.instance_classes) + 1))


def test_refuses_to_overwrite(tmp_path, fake_mnist):
    cfg = fs.FashionScenesConfig(train=2, val=1, size=32)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(BudgetsegError, match="not empty"):
        fs.build_fashion_scenes(foreign, cfg, fake_mnist, progress=False)
    with pytest.raises(BudgetsegError, match="not a fashion-scenes build"):
        fs.build_fashion_scenes(foreign, cfg, fake_mnist, overwrite=True, progress=False)
    assert (foreign / "thesis.tex").read_text() == "precious"
    out = fs.build_fashion_scenes(tmp_path / "out", cfg, fake_mnist, progress=False)
    (out / "stale.txt").write_text("from an older build")
    fs.build_fashion_scenes(
        out, fs.FashionScenesConfig(train=1, val=1, size=32), fake_mnist, overwrite=True, progress=False
    )
    assert not (out / "stale.txt").exists() and (out / "JPEGImages" / "train_00000.jpg").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign", "out"]


def test_interrupted_build_leaves_nothing(tmp_path, fake_mnist, monkeypatch):
    real_render, calls = fs.render_scene, []

    def failing_render(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real_render(*args, **kwargs)

    monkeypatch.setattr(fs, "render_scene", failing_render)
    with pytest.raises(KeyboardInterrupt):
        fs.build_fashion_scenes(tmp_path / "out", SMALL, fake_mnist, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_corrupt_idx_is_one_line_error(tmp_path, fake_mnist):
    bad = tmp_path / "bad"
    bad.mkdir()
    for p in fake_mnist.iterdir():
        (bad / p.name).write_bytes(p.read_bytes())
    raw = (fake_mnist / "t10k-images-idx3-ubyte").read_bytes()
    (bad / "t10k-images-idx3-ubyte").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(BudgetsegError, match="t10k-images-idx3-ubyte: IDX header promises") as e:
        fs.build_fashion_scenes(tmp_path / "out", SMALL, bad, progress=False)
    assert "\n" not in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad"]
    gz = (fake_mnist / "train-labels-idx1-ubyte.gz").read_bytes()
    (bad / "train-labels-idx1-ubyte.gz").write_bytes(gz[:-10])
    with pytest.raises(BudgetsegError, match="train-labels-idx1-ubyte.gz: cannot read IDX"):
        fs.load_idx(bad / "train-labels-idx1-ubyte.gz")
    (bad / "junk").write_bytes(b"\x00\x00\x0d\x01abcd")
    with pytest.raises(BudgetsegError, match="not an unsigned-byte IDX"):
        fs.load_idx(bad / "junk")


def test_finding_fashion_mnist(tmp_path, fake_mnist, monkeypatch):
    monkeypatch.setattr(fs, "DEFAULT_FASHION_MNIST", tmp_path / "nowhere")
    monkeypatch.delenv(fs.ENV_FASHION_MNIST, raising=False)
    with pytest.raises(BudgetsegError, match="apt-get install dataset-fashion-mnist"):
        fs.find_fashion_mnist(None)
    with pytest.raises(BudgetsegError, match="--fashion-mnist"):
        fs.find_fashion_mnist(tmp_path)
    monkeypatch.setenv(fs.ENV_FASHION_MNIST, str(fake_mnist))
    assert fs.find_fashion_mnist(None) == fake_mnist
    # torchvision's root folder: <root>/FashionMNIST/raw
    raw = tmp_path / "tv" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for p in fake_mnist.iterdir():
        (raw / p.name).write_bytes(p.read_bytes())
    assert fs.find_fashion_mnist(tmp_path / "tv") == raw
    items, labels = fs.load_fashion_mnist(raw, "test")
    assert items.shape == (50, 28, 28) and set(labels.tolist()) == {5, 6, 7, 8, 9}


def test_background_photos_are_offline_rgb():
    photos = fs.background_photos(short_side=100)
    assert len(photos) == len(fs.SKIMAGE_PHOTOS) + len(fs.SKLEARN_PHOTOS)
    assert all(p.dtype == np.uint8 and p.ndim == 3 and p.shape[2] == 3 and min(p.shape[:2]) <= 100 for p in photos)


@pytest.mark.skipif(not fs.DEFAULT_FASHION_MNIST.is_dir(), reason="Debian's dataset-fashion-mnist not installed")
def test_scene_statistics_match_voc():
    items, labels = fs.load_fashion_mnist(fs.find_fashion_mnist(fs.DEFAULT_FASHION_MNIST), "train")
    photos = fs.background_photos(short_side=192)
    rng = np.random.default_rng(0)
    scenes = [fs.render_scene(rng, items, labels, photos, 64) for _ in range(300)]
    classes = np.mean([len(set(s.instance_classes.tolist())) for s in scenes])
    objects = np.mean([len(s.instance_classes) for s in scenes])
    assert 1.3 <= classes <= 1.7 and 2.4 <= objects <= 3.2
    assert any(len(s.instance_classes) > len(set(s.instance_classes.tolist())) for s in scenes)
    for s in scenes:
        assert s.image.shape == (64, 64, 3) and s.instance_masks.shape[0] == len(s.instance_classes) >= 1
        assert s.instance_masks.sum(axis=0).max() <= 1  # visible masks never overlap
        for mask, cls in zip(s.instance_masks, s.instance_classes, strict=True):
            assert mask.sum() >= fs.MIN_PIXELS and (s.semantic[mask] == cls).all()
        covered = s.instance_masks.any(axis=0)
        assert set(np.unique(s.semantic[~covered]).tolist()) <= {0, IGNORE}
