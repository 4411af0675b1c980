import pytest

from budgetseg.errors import BudgetsegError
from budgetseg.splits import Split, make_split, read_split, write_split

POOL = [f"img_{i:04d}" for i in range(100)]


def test_split_partitions_the_pool():
    s = make_split(POOL, 30, seed=1)
    assert len(s.strong) == 30 and len(s.unlabeled) == 70
    assert set(s.strong) | set(s.unlabeled) == set(POOL)
    assert not set(s.strong) & set(s.unlabeled)


def test_split_is_seeded_and_nested():
    assert make_split(POOL, 30, seed=1) == make_split(list(reversed(POOL)), 30, seed=1)
    assert make_split(POOL, 30, seed=1) != make_split(POOL, 30, seed=2)
    small, big = make_split(POOL, 25, seed=3), make_split(POOL, 50, seed=3)
    assert set(small.strong) < set(big.strong)


def test_split_edges():
    assert make_split(POOL, 0).strong == [] and make_split(POOL, 100).unlabeled == []
    with pytest.raises(BudgetsegError, match="pool holds 100"):
        make_split(POOL, 101)
    with pytest.raises(BudgetsegError, match="duplicate"):
        make_split(POOL + ["img_0001"], 3)


def test_write_read_round_trip(tmp_path):
    s = make_split(POOL, 10, seed=0)
    write_split(tmp_path / "split", s)
    assert read_split(tmp_path / "split") == s


def test_overlap_and_duplicates_are_errors(tmp_path):
    with pytest.raises(BudgetsegError, match="both strong and unlabeled"):
        write_split(tmp_path / "a", Split(["x", "y"], ["y", "z"]))
    assert not (tmp_path / "a" / "strong.txt").exists()
    d = tmp_path / "b"
    d.mkdir()
    (d / "strong.txt").write_text("x\ny\nx\n")
    (d / "unlabeled.txt").write_text("z\n")
    with pytest.raises(BudgetsegError, match=r"strong\.txt: duplicate id 'x'"):
        read_split(d)
    (d / "strong.txt").write_text("\n")
    with pytest.raises(BudgetsegError, match=r"strong\.txt: split file is empty"):
        read_split(d)
    (d / "strong.txt").write_text("x\nz\n")
    with pytest.raises(BudgetsegError, match="both strong and unlabeled"):
        read_split(d)
