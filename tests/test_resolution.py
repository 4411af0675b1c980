"""The working resolution apart from the training crop: training crops of images rescaled around it, whole images
at it for inference (padded to the stride, cropped back), sliding windows beyond data.window."""

import numpy as np
import pytest
import torch

from budgetseg.config import ModelConfig
from budgetseg.data.pool import ImageFiles
from budgetseg.data.transforms import STRIDE, Resolution, letterbox, random_scale_crop_flip, working_image
from budgetseg.engine.device import to_input
from budgetseg.engine.infer import infer_tiled, predict, window_starts
from budgetseg.instance.task import InstanceTask
from budgetseg.semantic.task import SemanticTask
from budgetseg.task import PLAIN

NAMES = ["background", "a", "b"]
MEAN, STD = (0.5,) * 3, (0.5,) * 3
MODEL = ModelConfig(steps=2)


def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "res, shape, inside",
    [
        (Resolution(64, "native"), (384, 480), (360, 480)),
        (Resolution(64, 180), (192, 256), (180, 240)),  # the shorter side 180: half a CamVid frame
        (Resolution(64, "native", window=256), (384, 480), (360, 480)),  # the window does not shrink by default
    ],
)
def test_working_image_rescales_and_pads_to_the_stride(res, shape, inside):
    canvas, hw = working_image(photo(360, 480), res)
    assert canvas.shape == (*shape, 3) and hw == inside
    assert canvas.shape[0] % STRIDE == 0 and canvas.shape[1] % STRIDE == 0
    assert not canvas[inside[0] :].any() and not canvas[:, inside[1] :].any()  # padded with 0


def test_fit_is_the_letterbox_and_the_window_caps_where_asked():
    image = photo(360, 480)
    fit, hw = working_image(image, 128)
    assert hw == (96, 128) and np.array_equal(fit, letterbox(image, 128)[0])
    capped, hw = working_image(image, Resolution(64, "native", window=256), cap=True)
    assert hw == (192, 256) and capped.shape == (192, 256, 3)


def test_training_crops_come_from_the_image_at_the_working_scale():
    image = photo(360, 480)
    mask = (np.arange(360 * 480) % 7).astype(np.uint8).reshape(360, 480)
    rng = np.random.default_rng(0)
    crop, crop_mask = random_scale_crop_flip(image, mask, Resolution(64, "native"), rng, (1.0, 1.0))
    assert crop.shape == (64, 64, 3)
    # native scale, no rescaling: the crop is a window of the photo itself, maybe mirrored
    windows = np.lib.stride_tricks.sliding_window_view(image, (64, 64, 3))[:, :, 0]
    same = (windows == crop).all(axis=(2, 3, 4)) | (windows[:, :, :, ::-1] == crop).all(axis=(2, 3, 4))
    (y,), (x,) = np.nonzero(same)
    window = mask[y : y + 64, x : x + 64]
    assert np.array_equal(window, crop_mask) or np.array_equal(window[:, ::-1], crop_mask)


def input_shapes(model: torch.nn.Module) -> list[tuple[int, int]]:
    shapes: list[tuple[int, int]] = []
    model.register_forward_pre_hook(lambda m, args: shapes.append(tuple(args[0].shape[-2:])))
    return shapes


@pytest.fixture(scope="module")
def semantic_model():
    torch.manual_seed(0)
    return SemanticTask(NAMES).build_model(MODEL)[0].eval()


def test_a_large_photo_is_predicted_at_the_working_resolution_not_the_crop(tmp_path, semantic_model):
    from PIL import Image

    Image.fromarray(photo(1500, 2000)).save(tmp_path / "big.png")
    Image.fromarray(photo(90, 120, 1)).save(tmp_path / "small.png")
    files = ImageFiles([tmp_path / "big.png", tmp_path / "small.png"], NAMES)
    shapes = input_shapes(semantic_model)
    res = Resolution(32, 96)  # crops of 32 px; whole images with a shorter side of 96
    stream = predict(semantic_model, files, files.ids, SemanticTask(NAMES), size=res, mean=MEAN, std=STD)
    out = {sample.id: pred for sample, pred in stream}
    assert out["big"].label.shape == (1500, 2000) and out["small"].label.shape == (90, 120)
    assert shapes == [(96, 128)]  # one batch: 96x128 both (the big one shrunk, the small one grown), not 32x32


def test_sliding_windows_see_window_sized_tiles_and_cover_the_image(semantic_model):
    task = SemanticTask(NAMES)
    x = to_input(torch.from_numpy(photo(96, 160)[None]), MEAN, STD, torch.device("cpu"))
    whole = infer_tiled(task, semantic_model, x, None, PLAIN, ["a"])
    same = infer_tiled(task, semantic_model, x, 160, PLAIN, ["a"])
    assert torch.equal(whole, same)  # a window as large as the image: one pass
    shapes = input_shapes(semantic_model)
    tiled = infer_tiled(task, semantic_model, x, 64, PLAIN, ["a"])
    assert tiled.shape == whole.shape and set(shapes) == {(64, 64)}
    assert len(shapes) == len(window_starts(96, 64)) * len(window_starts(160, 64))
    assert torch.allclose(tiled.sum(1), torch.ones(1, 96, 160))  # averaged probabilities still sum to one
    assert window_starts(160, 64) == [0, 42, 84, 96] and window_starts(50, 64) == [0]


def test_an_instance_network_shrinks_images_beyond_the_window(tmp_path):
    from PIL import Image

    torch.manual_seed(0)
    task = InstanceTask(NAMES, steps=2)
    model = task.build_model(MODEL)[0].eval()
    Image.fromarray(photo(200, 300)).save(tmp_path / "p.png")
    files = ImageFiles([tmp_path / "p.png"], NAMES)
    shapes = input_shapes(model)
    res = Resolution(64, "native", window=96)
    [(sample, pred)] = list(predict(model, files, files.ids, task, size=res, mean=MEAN, std=STD))
    assert shapes == [(64, 96)] and all(m.shape == (200, 300) for m, _, _ in pred)


def test_a_model_files_resolution_is_read_from_its_metadata_and_old_files_fit():
    assert Resolution.of_meta({"size": 128, "scale": 180, "window": 512}) == Resolution(128, 180, 512)
    assert Resolution.of_meta({"size": "96"}) == Resolution(96, "fit", None)  # written before scale existed
