from pathlib import Path

import numpy as np
import pytest

from budgetseg.data.transforms import color_cutout, letterbox, random_scale_crop_flip
from budgetseg.engine.batches import TrainSet, batch_plan, stream_index


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
    sets = [
        TrainSet(None, [f"s{i}" for i in range(4)], None),
        TrainSet(None, [f"p{i}" for i in range(40)], None, Path("p")),
    ]
    plan = batch_plan(sets, 8, it=3, strong_fraction=0.5)
    assert [s for s, _ in plan].count(0) == 4 and [s for s, _ in plan].count(1) == 4
    assert all(s == -1 for s, _ in batch_plan(sets, 8, 3, None))


def test_cutmix_pastes_boxes_between_members_only():
    from budgetseg.engine.batches import cutmix

    images = [np.full((16, 16, 3), i * 10, np.uint8) for i in range(4)]
    masks = [np.full((16, 16), i, np.uint8) for i in range(4)]
    mixed = 0
    for seed in range(8):
        ims, mks = [x.copy() for x in images], [x.copy() for x in masks]
        cutmix(ims, mks, [1, 2, 3], np.random.default_rng(seed))
        assert np.array_equal(mks[0], masks[0]) and np.array_equal(ims[0], images[0])  # not a member
        for i in (1, 2, 3):
            assert set(np.unique(mks[i])) <= {1, 2, 3}
            assert np.array_equal(ims[i][..., 0], mks[i] * 10)  # image and labels moved together
            mixed += int((mks[i] != i).any())
    assert mixed > 0
    ims, mks = [x.copy() for x in images], [x.copy() for x in masks]
    cutmix(ims, mks, [2], np.random.default_rng(0))  # one member: nothing to mix with
    assert all(np.array_equal(a, b) for a, b in zip(mks, masks, strict=True))


def test_multiscale_flip_inference_averages_probabilities():
    import torch

    from budgetseg.semantic.task import SemanticTask
    from budgetseg.task import InferOptions

    class Mirror(torch.nn.Module):  # class 1 on the left half: its flip predicts the right half
        def forward(self, x):
            b, _, h, w = x.shape
            logits = torch.zeros(b, 2, h, w)
            logits[:, 1, :, : w // 2] = 10.0
            return logits

    task = SemanticTask(["bg", "a"])
    x = torch.zeros(1, 3, 32, 32)
    plain = task.infer(Mirror(), x)
    assert plain.shape == (1, 2, 32, 32) and torch.allclose(plain.sum(1), torch.ones(1, 32, 32))
    both = task.infer(Mirror(), x, options=InferOptions(tta=True, scales=(0.5, 1.0)))
    assert both.shape == (1, 2, 32, 32)
    assert torch.allclose(both[0, 1, 16, 8], both[0, 1, 16, 24])  # left and right now agree
    assert float(both[0, 1, 16, 8]) == pytest.approx(0.75, abs=1e-3)  # mean of 1 (seen) and 0.5 (flat logits)
