"""Label Studio brush RLE, CVAT label maps and colour masks, and the Label Studio JSON reader."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fixtures_data import box, write_jpeg
from PIL import Image

from budgetseg.data.brush import brush_rle_to_mask, decode_rle, encode_rle, mask_to_brush_rle
from budgetseg.data.labelmap import read_color_label_png, read_labelmap
from budgetseg.data.labelstudio import LabelStudioDataset, brush_result, labeling_config
from budgetseg.data.sample import IGNORE
from budgetseg.errors import BudgetsegError

# @thi.ng/rle-pack's own test (packages/rle-pack/test/main.test.ts): 1024 3-bit words, zero but for a ramp at 512
RAMP = [1, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 4, 4, 5, 4, 4, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 1]
PACKED_3BIT = [0, 0, 4, 0, 17, 27, 255, 1, 255, 18, 24, 212, 78, 24, 5, 134, 68, 227, 82, 30, 3, 196, 0]
PACKED_3BIT_1249 = [0, 0, 4, 0, 16, 9, 199, 255, 140, 134, 234, 206, 96, 89, 150, 119, 89, 15, 241, 0]
# label-studio-converter's tests/test_brush.py: its encoder (single values as one-word records) on 8-bit words
CONVERTER_VALUES = [1, 1, 1, 1, 2, 3, 5, 6, 7, 8, 4, 4, 4, 4, 4, 4, 4, 4]
CONVERTER_PACKED = [0, 0, 0, 18, 57, 27, 252, 96, 32, 1, 0, 6, 0, 40, 0, 192, 3, 128, 17, 56, 32]


def ramp() -> np.ndarray:
    src = np.zeros(1024, np.uint8)
    src[512 : 512 + len(RAMP)] = RAMP
    return src


def test_encode_matches_rle_pack_byte_for_byte():
    assert encode_rle(ramp(), word_size=3) == PACKED_3BIT
    assert encode_rle(ramp(), word_size=3, rle_sizes=(1, 2, 4, 9)) == PACKED_3BIT_1249


def test_decode_published_streams():
    np.testing.assert_array_equal(decode_rle(PACKED_3BIT), ramp())
    np.testing.assert_array_equal(decode_rle(PACKED_3BIT_1249), ramp())
    assert decode_rle(CONVERTER_PACKED).tolist() == CONVERTER_VALUES


def test_header_counts_rgba_values():
    """As in real Label Studio exports: the first 4 bytes are H * W * 4, then word size 8 and sizes 3, 4, 8, 16."""
    rle = mask_to_brush_rle(np.zeros((480, 640), bool))
    assert rle[:6] == [0, 18, 192, 0, 57, 27]  # 1,228,800 values


@pytest.mark.parametrize("seed", range(6))
def test_random_round_trips(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(1, 40, 2)
    mask = rng.random((h, w)) < rng.random()
    if seed % 2:  # blobs: long runs
        mask = np.kron(mask[: h // 4 + 1, : w // 4 + 1], np.ones((4, 4), bool))[:h, :w]
    np.testing.assert_array_equal(brush_rle_to_mask(mask_to_brush_rle(mask), h, w), mask)
    values = rng.integers(0, 256, rng.integers(1, 3000)).astype(np.uint8)
    values[rng.random(values.size) < 0.6] = 7  # runs and literals mixed
    np.testing.assert_array_equal(decode_rle(encode_rle(values)), values)


@pytest.mark.parametrize("n", [2**16 - 1, 2**16, 2**16 + 1, 2**16 + 2, 2**17 + 1])
def test_runs_longer_than_the_largest_field(n):
    values = np.r_[np.full(n, 9), [1, 2], np.full(3, 9), [5]].astype(np.uint8)
    np.testing.assert_array_equal(decode_rle(encode_rle(values)), values)
    literals = (np.arange(n) % 2).astype(np.uint8)  # a literal block longer than one record holds
    np.testing.assert_array_equal(decode_rle(encode_rle(literals)), literals)


def test_alpha_is_the_mask():
    """Label Studio shows any pixel with non-zero alpha, whatever R, G, B hold."""
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[0, 1, 3] = 40
    rgba[1, 2, :3] = 255
    assert brush_rle_to_mask(encode_rle(rgba.ravel()), 2, 3).tolist() == [[False, True, False], [False] * 3]


def test_decode_errors():
    with pytest.raises(ValueError, match="expected 24"):
        brush_rle_to_mask(mask_to_brush_rle(np.ones((2, 2), bool)), 2, 3)
    with pytest.raises(ValueError, match="ends early"):
        decode_rle(mask_to_brush_rle(np.eye(5, dtype=bool))[:-3])


# ----------------------------------------------------------------------------------------------- CVAT label maps

LABELMAP = """# label:color_rgb:parts:actions
background:0,0,0::
cat:128,0,0::
dog:0,128,0::
void:255,255,255::
"""


def test_read_labelmap(tmp_path):
    (tmp_path / "labelmap.txt").write_text(LABELMAP)
    names, colours = read_labelmap(tmp_path / "labelmap.txt")
    assert names == ["background", "cat", "dog"]
    assert colours == {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), IGNORE: (255, 255, 255)}


def test_labelmap_without_background_or_ignore(tmp_path):
    (tmp_path / "labelmap.txt").write_text("cat:128,0,0::\n")
    names, colours = read_labelmap(tmp_path / "labelmap.txt")
    assert names == ["background", "cat"] and colours[0] == (0, 0, 0) and colours[IGNORE] == (224, 224, 192)


@pytest.mark.parametrize(
    "text, problem",
    [
        ("background:0,0,0::\ncat:0,0,0::\n", "used by two labels"),
        ("background:0,0,0::\ncat:1,2::\n", "line 2"),
        ("cat:1,2,3::\nbackground:0,0,0::\n", "background must be the first"),
    ],
)
def test_labelmap_errors(tmp_path, text, problem):
    (tmp_path / "labelmap.txt").write_text(text)
    with pytest.raises(BudgetsegError, match=problem):
        read_labelmap(tmp_path / "labelmap.txt")


def test_colour_png(tmp_path):
    (tmp_path / "labelmap.txt").write_text(LABELMAP)
    _, colours = read_labelmap(tmp_path / "labelmap.txt")
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 0] = (128, 0, 0)
    rgb[0, 1] = (0, 128, 0)
    rgb[1, 2] = (255, 255, 255)  # the void label
    rgb[1, 0] = (224, 224, 192)  # VOC's border colour, no class's
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(np.dstack([rgb, np.full((2, 3), 255, np.uint8)])).save(tmp_path / "rgba.png")
    want = [[1, 2, 0], [IGNORE, 0, IGNORE]]
    assert read_color_label_png(tmp_path / "a.png", colours).tolist() == want
    assert read_color_label_png(tmp_path / "rgba.png", colours).tolist() == want
    rgb[0, 2] = (1, 2, 3)
    Image.fromarray(rgb).save(tmp_path / "bad.png")
    with pytest.raises(BudgetsegError) as e:
        read_color_label_png(tmp_path / "bad.png", colours)
    assert str(e.value) == f"{tmp_path / 'bad.png'}: colour 1,2,3 is not in the label map"


def test_index_png_reads_indices(tmp_path):
    Image.fromarray(np.array([[0, 2], [255, 1]], np.uint8), mode="L").save(tmp_path / "l.png")
    assert read_color_label_png(tmp_path / "l.png", {}).tolist() == [[0, 2], [255, 1]]


# ----------------------------------------------------------------------------------------------- Label Studio JSON

NAMES = ["background", "cat", "dog"]


def task(sample_id, image, annotations=None, **data) -> dict:
    t = {"data": {"image": image, **({"sample_id": sample_id} if sample_id else {}), **data}}
    if annotations is not None:
        t["annotations"] = annotations
    return t


def ann(result, updated="2024-01-01T00:00:00Z", cancelled=False) -> dict:
    return {"result": result, "updated_at": updated, "was_cancelled": cancelled}


@pytest.fixture
def images(tmp_path):
    write_jpeg(tmp_path / "img" / "a.jpg", 4, 6)
    write_jpeg(tmp_path / "img" / "b.jpg", 5, 3)
    return tmp_path / "img"


def write_tasks(tmp_path, tasks, config=True):
    if config:
        colours = {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), IGNORE: (224, 224, 192)}
        (tmp_path / "labeling_config.xml").write_text(labeling_config(NAMES, colours))
    (tmp_path / "export.json").write_text(json.dumps(tasks))
    return tmp_path / "export.json"


def test_reader_paints_classes_instances_and_ignore(tmp_path, images):
    cat1, cat2, dog, ign = box(0, 2, 0, 2, 4, 6), box(2, 4, 4, 6, 4, 6), box(0, 4, 2, 4, 4, 6), box(3, 4, 0, 3, 4, 6)
    result = [brush_result(m, n, f"r{k}") for k, (m, n) in enumerate([(cat1, "cat"), (dog, "dog"), (cat2, "cat")])]
    result.append(brush_result(ign, "ignore", "r9"))
    result.append({"type": "choices", "value": {"choices": ["ok"]}})  # not a region: skipped
    path = write_tasks(tmp_path, [task(None, "/data/local-files/?d=images/a.jpg", [ann(result)])])
    ds = LabelStudioDataset(path, images)
    assert ds.ids == ["a"] and ds.class_names == NAMES and ds.has_labels("a")
    s = ds.load("a")
    want = np.zeros((4, 6), np.uint8)
    want[ign] = IGNORE
    want[dog] = 2  # instances paint over ignore, the largest first
    want[cat1 | cat2] = 1
    np.testing.assert_array_equal(s.semantic, want)
    assert s.instance_classes.tolist() == [1, 2, 1]
    np.testing.assert_array_equal(s.instance_masks, np.stack([cat1, dog, cat2]))
    assert s.image.shape == (4, 6, 3)


def test_latest_non_cancelled_annotation_counts(tmp_path, images):
    cat, dog = box(0, 1, 0, 1, 5, 3), box(1, 2, 0, 3, 5, 3)
    anns = [
        ann([brush_result(cat, "cat", "a")], "2024-03-01T10:00:00Z"),
        ann([brush_result(dog, "dog", "b")], "2024-03-02T10:00:00Z"),
        ann([], "2024-03-03T10:00:00Z", cancelled=True),
    ]
    preds = [{"result": [brush_result(cat, "cat", "c")]}]
    tasks = [task(None, "/data/upload/3/0a1b2c3d-b.jpg", anns), task("A", "a.jpg", []) | {"predictions": preds}]
    ds = LabelStudioDataset(write_tasks(tmp_path, tasks), images)
    # Label Studio's upload prefix dropped from the file and the id: the photos' folder names it b, not 0a1b2c3d-b
    assert ds.ids == ["b", "A"] and ds.image_path("b") == images / "b.jpg"
    assert ds.has_labels("0a1b2c3d-b") and ds.image_path("0a1b2c3d-b") == images / "b.jpg"  # older runs' id
    assert ds.load("b").instance_classes.tolist() == [2]
    assert not ds.has_labels("A")  # a prediction is not a label
    with pytest.raises(BudgetsegError, match="no annotation"):
        ds.load("A")


def test_class_names_from_the_labels_without_a_config(tmp_path, images):
    m = box(0, 1, 0, 1, 4, 6)
    result = [brush_result(m, "zebra", "1"), brush_result(m, "ant", "2"), brush_result(m, "Void", "3")]
    ds = LabelStudioDataset(write_tasks(tmp_path, [task("a", "a.jpg", [ann(result)])], config=False), images)
    assert ds.class_names == ["background", "ant", "zebra"]  # sorted by name, ignore left out


def test_without_background_unpainted_and_background_brushes_are_unlabelled(tmp_path, images):
    """data.background false: the labels are the classes (no background added), unpainted pixels and a
    `background` brush read as 255, and the first class (0) paints like the others."""
    sky, back = box(0, 2, 0, 6, 4, 6), box(3, 4, 0, 2, 4, 6)
    result = [brush_result(sky, "sky", "1"), brush_result(back, "background", "2")]
    ds = LabelStudioDataset(
        write_tasks(tmp_path, [task("a", "a.jpg", [ann(result)])], config=False), images, background=False
    )
    assert ds.class_names == ["sky"]
    want = np.full((4, 6), IGNORE, np.uint8)
    want[sky] = 0
    np.testing.assert_array_equal(ds.load("a").semantic, want)


@pytest.mark.parametrize(
    "result, problem",
    [
        ([brush_result(box(0, 1, 0, 1, 4, 6), "horse", "1")], "label 'horse' is not a class"),
        ([brush_result(box(0, 1, 0, 1, 3, 3), "cat", "1")], "expected an RLE brush of 6x4"),
        ([{"type": "polygonlabels", "value": {"points": []}}], "polygonlabels regions are not supported"),
    ],
)
def test_reader_errors(tmp_path, images, result, problem):
    ds = LabelStudioDataset(write_tasks(tmp_path, [task("a", "a.jpg", [ann(result)])]), images)
    with pytest.raises(BudgetsegError, match=problem):
        ds.load("a")


def test_duplicate_ids_are_an_error(tmp_path, images):
    with pytest.raises(BudgetsegError, match="appears twice"):
        LabelStudioDataset(write_tasks(tmp_path, [task(None, "x/a.jpg"), task(None, "y/a.jpg")]), images)
