"""Strong / unlabeled splits of a pool of image ids: seeded, nested across N, checked, written as text files.

A split folder holds `strong.txt` (N ids with full labels) and `unlabeled.txt` (the other M ids), one id per line,
and, for a simulated mix of label types (data.labels), `boxes.txt` (those strong ids labelled by boxes only) and
`tags.txt` (those unlabeled ids with image-level tags). For one seed the strong sets are nested: the N=25 images
are among the N=50 ones, as in a growing budget.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from budgetseg.data.sample import check_id
from budgetseg.errors import BudgetsegError, input_error
from budgetseg.io import write_text


@dataclass(frozen=True)
class Split:
    strong: list[str]
    unlabeled: list[str]
    boxes: list[str] = field(default_factory=list)  # of strong: labelled by boxes only
    tags: list[str] = field(default_factory=list)  # of unlabeled: with image-level tags


def check_unique(ids: list[str], where: str | Path) -> None:
    dup = [i for i, c in Counter(ids).items() if c > 1]
    if dup:
        raise input_error(where, f"duplicate id {dup[0]!r} ({len(dup)} duplicated in all)")


def random_order(pool: list[str], seed: int = 0) -> list[str]:
    """The pool's ids, sorted, then shuffled by a permutation seeded with `seed`."""
    check_unique(pool, "pool")
    ids = sorted(pool)
    return [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]


def make_split(pool: list[str], n_strong: int, seed: int = 0) -> Split:
    """First `n_strong` ids of random_order(pool, seed) are strong, the rest unlabeled."""
    if not 0 <= n_strong <= len(pool):
        raise BudgetsegError(f"N={n_strong} strong images requested but the pool holds {len(pool)}")
    shuffled = random_order(pool, seed)
    return Split(strong=sorted(shuffled[:n_strong]), unlabeled=sorted(shuffled[n_strong:]))


def make_mix_split(pool: list[str], n_full: int, n_boxes: int, n_tags: int, seed: int = 0) -> Split:
    """random_order(pool, seed) cut in turn: `n_full` images with full masks, `n_boxes` with boxes only (both
    strong), `n_tags` with image-level tags (unlabeled), the rest unlabeled. Nested in each count: more boxes at
    the same N keep the earlier box images, and the box images at N are the full ones at N + n_boxes."""
    if min(n_full, n_boxes, n_tags) < 0 or n_full + n_boxes + n_tags > len(pool):
        raise BudgetsegError(
            f"{n_full} full + {n_boxes} box + {n_tags} tag images requested but the pool holds {len(pool)}"
        )
    order = random_order(pool, seed)
    cut = n_full + n_boxes
    return Split(
        strong=sorted(order[:cut]),
        unlabeled=sorted(order[cut:]),
        boxes=sorted(order[n_full:cut]),
        tags=sorted(order[cut : cut + n_tags]),
    )


def check_split(split: Split, where: str | Path = "split") -> None:
    check_unique(split.strong, Path(where) / "strong.txt")
    check_unique(split.unlabeled, Path(where) / "unlabeled.txt")
    both = set(split.strong) & set(split.unlabeled)
    if both:
        raise input_error(where, f"{len(both)} ids are both strong and unlabeled (e.g. {sorted(both)[0]!r})")
    for name, ids, of in (("boxes", split.boxes, split.strong), ("tags", split.tags, split.unlabeled)):
        check_unique(ids, Path(where) / f"{name}.txt")
        stray = sorted(set(ids) - set(of))
        if stray:
            which = "strong" if of is split.strong else "unlabeled"
            raise input_error(Path(where) / f"{name}.txt", f"{len(stray)} id(s) are not {which}, e.g. {stray[0]!r}")


def write_split(folder: str | Path, split: Split) -> None:
    """Write strong.txt and unlabeled.txt (atomically) after checking the split."""
    folder = Path(folder)
    check_split(split, folder)
    write_text(folder / "strong.txt", "".join(f"{i}\n" for i in split.strong))
    write_text(folder / "unlabeled.txt", "".join(f"{i}\n" for i in split.unlabeled))
    for name, ids in (("boxes", split.boxes), ("tags", split.tags)):
        if ids:
            write_text(folder / f"{name}.txt", "".join(f"{i}\n" for i in ids))


def read_ids(path: str | Path, allow_empty: bool = False, key: Callable[[str], str] | None = None) -> list[str]:
    """Ids of a text file, one per line (blank lines skipped; each checked: data.sample.check_id); missing, empty or
    duplicated is an error. `key` turns a line into its id where lines hold more (SegNet's image / label pairs)."""
    path = Path(path)
    if not path.is_file():
        raise input_error(path, "split file is missing")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()  # -sig: a byte-order mark is no part of an id
    except (OSError, UnicodeDecodeError) as e:
        raise input_error(path, f"cannot read split file ({e.__class__.__name__}: {e})") from None
    ids: list[str] = []
    first_line: dict[str, int] = {}
    for n, line in enumerate(lines, start=1):
        image_id = line.strip()
        if not image_id:
            continue
        image_id = key(image_id) if key is not None else image_id
        check_id(path, image_id, f"line {n}: ")
        if image_id in first_line:
            raise input_error(path, f"duplicate id {image_id!r} on line {n} (first on line {first_line[image_id]})")
        first_line[image_id] = n
        ids.append(image_id)
    if not ids and not allow_empty:
        raise input_error(path, "split file is empty")
    return ids


def read_split(folder: str | Path) -> Split:
    folder = Path(folder)
    optional = {n: read_ids(folder / f"{n}.txt") if (folder / f"{n}.txt").is_file() else [] for n in ("boxes", "tags")}
    split = Split(read_ids(folder / "strong.txt"), read_ids(folder / "unlabeled.txt", allow_empty=True), **optional)
    check_split(split, folder)
    return split
