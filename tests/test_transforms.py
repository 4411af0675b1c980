import numpy as np

from budgetseg.data.transforms import color_cutout, letterbox, random_scale_crop_flip
from budgetseg.engine import TrainSet, batch_plan, stream_index


def _pair(h=40, w=60):
    image = np.zeros((h, w, 3), np.uint8)
    image[:, : w // 2] = 200
    mask = np.zeros((h, w), np.uint8)
    mask[:, : w // 2] = 3
    return image, mask


def test_scale_crop_flip_keeps_image_and_mask_aligned():
    image, mask = _pair()
    for seed in range(20):
        im, mk = random_scale_crop_flip(image, mask, 32, np.random.default_rng(seed), (0.5, 2.0))
        assert im.shape == (32, 32, 3) and mk.shape == (32, 32)
        assert set(np.unique(mk)) <= {0, 3, 255}
        # where the mask says class 3 the image is bright, where it says 0 it is dark (nearest vs bilinear
        # resizing may differ by a pixel at the edge, so look away from it)
        inner = (mk == 3) & (np.roll(mk, 1, 1) == 3) & (np.roll(mk, -1, 1) == 3)
        assert (im[inner] > 150).all()
        assert (im[mk == 255] == 0).all()  # padding: black image, ignored mask


def test_scale_crop_flip_is_seeded():
    image, mask = _pair()
    a = random_scale_crop_flip(image, mask, 32, np.random.default_rng(5), (0.5, 2.0))
    b = random_scale_crop_flip(image, mask, 32, np.random.default_rng(5), (0.5, 2.0))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_color_cutout_only_ignores_masked_box():
    image, mask = _pair()
    changed = 0
    for seed in range(10):
        im, mk = color_cutout(image, mask, np.random.default_rng(seed))
        assert im.shape == image.shape
        assert set(np.unique(mk)) <= {0, 3, 255}
        changed += int((mk == 255).any())
    assert 0 < changed < 10


def test_letterbox_keeps_aspect():
    canvas, (h, w) = letterbox(np.full((50, 100, 3), 9, np.uint8), 64)
    assert canvas.shape == (64, 64, 3) and (h, w) == (32, 64)
    assert (canvas[:32] == 9).all() and (canvas[32:] == 0).all()


def test_streams_visit_every_item_once_per_pass():
    seen = [stream_index(0, 1, p, 7) for p in range(14)]
    assert sorted(seen[:7]) == list(range(7)) and sorted(seen[7:]) == list(range(7))


def test_batch_plan_mixes_strong_and_pseudo():
    sets = [TrainSet([None] * 4, [None] * 4), TrainSet([None] * 40, [None] * 40, pseudo=True)]
    plan = batch_plan(sets, 8, it=3, strong_fraction=0.5)
    assert [s for s, _ in plan].count(0) == 4 and [s for s, _ in plan].count(1) == 4
    assert all(s == -1 for s, _ in batch_plan(sets, 8, 3, None))
