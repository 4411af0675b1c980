"""IL+C weak labels: derived from masks, read from CSV / JSON files (and their errors), W-RSIS class order."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from fixtures_data import write_voc

from budgetseg.data.voc import VOC_CLASSES, VOCDataset
from budgetseg.errors import BudgetsegError
from budgetseg.instance.task import class_sequence
from budgetseg.weak import check_covers, from_dataset, read_weak_labels

NAMES = ["background", "shirt", "shoe", "bag"]


def test_derived_from_masks_match_the_instances(tmp_path):
    expected = write_voc(tmp_path)
    ds = VOCDataset(tmp_path)
    weak = from_dataset(ds, ["a", "b", "c"])
    for image_id, lab in expected.items():
        assert weak[image_id] == dict(Counter(int(c) for c in lab.classes))
        assert all(1 <= c < len(VOC_CLASSES) and n >= 1 for c, n in weak[image_id].items())


def test_class_sequence_is_class_id_ascending_with_repeats():
    assert class_sequence({3: 1, 1: 2}) == [1, 1, 3]
    assert class_sequence({}) == []


def test_csv_names_ids_zero_counts_and_blank_lines(tmp_path):
    p = tmp_path / "weak.csv"
    p.write_text("image_id,class,count\nimg1,shirt,2\nimg1,3,1\n\nimg2,shoe,0\n")
    assert read_weak_labels(p, NAMES) == {"img1": {1: 2, 3: 1}, "img2": {}}


def test_json(tmp_path):
    p = tmp_path / "weak.json"
    p.write_text(json.dumps({"img1": {"shirt": 2, "3": 1}, "img2": {}}))
    assert read_weak_labels(p, NAMES) == {"img1": {1: 2, 3: 1}, "img2": {}}


@pytest.mark.parametrize(
    "name, text, problem",
    [
        ("w.csv", "id,cls,n\na,shirt,1\n", "line 1: expected the header image_id,class,count"),
        ("w.csv", "", "line 1: expected the header"),
        ("w.csv", "image_id,class,count\na,shirt\n", "line 2: expected 3 fields"),
        ("w.csv", "image_id,class,count\na,hat,1\n", "line 2: unknown class 'hat'"),
        ("w.csv", "image_id,class,count\na,background,1\n", "line 2: unknown class 'background'"),
        ("w.csv", "image_id,class,count\na,4,1\n", "line 2: unknown class '4'"),
        ("w.csv", "image_id,class,count\na,shirt,-1\n", "line 2: count must be a whole number >= 0, got '-1'"),
        ("w.csv", "image_id,class,count\na,shirt,1.5\n", "count must be a whole number"),
        ("w.csv", "image_id,class,count\na,shirt,1\na,1,2\n", "line 3: class 'shirt' of image 'a' is listed twice"),
        ("w.csv", "image_id,class,count\n,shirt,1\n", "line 2: empty image id"),
        ("w.json", "{not json", "not valid JSON"),
        ("w.json", "[1, 2]", "expected an object"),
        ("w.json", '{"a": 3}', "image 'a': expected an object of class -> count"),
        ("w.json", '{"a": {"shirt": true}}', "count must be a whole number"),
        ("w.json", '{"a": {"hat": 1}}', "image 'a': unknown class 'hat'"),
    ],
)
def test_bad_files_name_the_file_and_the_problem(tmp_path, name, text, problem):
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(BudgetsegError) as e:
        read_weak_labels(p, NAMES)
    msg = str(e.value)
    assert msg.startswith(f"{p}: ") and problem in msg and "\n" not in msg


def test_missing_file_and_uncovered_images(tmp_path):
    with pytest.raises(BudgetsegError, match="weak.csv: cannot read weak-label file"):
        read_weak_labels(tmp_path / "weak.csv", NAMES)
    with pytest.raises(BudgetsegError, match=r"w.csv: no IL\+C label for image\(s\) 'b', 'c'"):
        check_covers({"a": {1: 1}}, ["a", "b", "c"], tmp_path / "w.csv")
    check_covers({"a": {}}, ["a"], tmp_path / "w.csv")
