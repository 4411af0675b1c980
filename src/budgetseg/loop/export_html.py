"""export --to html: a review page that needs no server and no annotation tool.

  index.html      the pseudo-labels, the most errors f_theta expects first (review.csv's order), each with its
                  image, its pseudo-label over the image and, where the pool has it, the ground truth beside;
                  the strong labels apart, below; a class legend; relative links only, so the folder can be copied
                  or zipped and opened anywhere
  images/         the images (copies); overlays/<id>.jpg the labels over them; truth/<id>.jpg the ground truth
A line at the bottom of the page says whether every picture loaded (a page moved without its folders says which
are missing).
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote

import numpy as np

from budgetseg.data.sample import SegDataset, read_image
from budgetseg.io import atomic_write, copy_image, write_text
from budgetseg.overlay import blend, palette_array, save_jpeg
from budgetseg.task import ExportItem, Task

IGNORE_COLOUR = (224, 224, 192)  # VOC's border colour (palette index 255): pixels training ignores


def save_overlay(path: Path, image: np.ndarray, index: np.ndarray, first: int) -> None:
    """`image` with the colour of each index >= first (IGNORE's too) mixed in (overlay.blend), as a JPEG."""
    shown = blend(image, index, palette_array(), first)
    atomic_write(path, lambda f: save_jpeg(shown, f), fsync=False)


def write_pictures(folder: Path, item: ExportItem, truth: np.ndarray | None) -> dict[str, str]:
    """images/<file>, overlays/<id>.jpg and (with `truth`) truth/<id>.jpg of one item; their relative URLs."""
    copy_image(item.image, folder / "images" / item.file_name)
    image = read_image(item.image)
    urls = {"image": "images/" + quote(item.file_name), "labels": f"overlays/{quote(item.id)}.jpg"}
    save_overlay(folder / "overlays" / f"{item.id}.jpg", image, item.index_map(), item.first)
    if truth is not None:
        save_overlay(folder / "truth" / f"{item.id}.jpg", image, truth, item.first)
        urls["truth"] = f"truth/{quote(item.id)}.jpg"
    return urls


def card(item, urls: dict[str, str], rank: int | None, errors: float | None) -> str:
    """One <figure> of the page: the image, its labels over it, the ground truth where known, a caption."""
    name = html.escape(item.id)
    pics = [f'<a href="{urls["image"]}"><img src="{urls["image"]}" alt="{name}" loading="lazy"></a>']
    kind = "pseudo-label" if item.source == "pseudo" else "label"
    pics.append(f'<img src="{urls["labels"]}" alt="{kind} of {name}" loading="lazy">')
    if "truth" in urls:
        pics.append(f'<img src="{urls["truth"]}" alt="ground truth of {name}" loading="lazy">')
    attrs = f'data-id="{name}" data-source="{item.source}"'
    caption = name
    if rank is not None:
        attrs += f' data-rank="{rank}" data-expected-errors="{errors}"'
        caption = f"#{rank} {name}: expected errors {errors:g}"
    pictures = f'<div class="pics">{"".join(pics)}</div>'
    return f'<figure class="card" {attrs}>{pictures}<figcaption>{caption}</figcaption></figure>'


def legend(item: ExportItem, class_names: list[str]) -> str:
    """The colours of an item's overlay (the classes, or a note on instance colours) and the ignore colour."""
    pal = palette_array()
    entries = [(pal[k], text) for k, text in item.legend(class_names)]
    entries.append((np.asarray(IGNORE_COLOUR), "ignored (unsure, or void): not used in training"))
    rows = [
        f'<li><span class="swatch" style="background: rgb({r}, {g}, {b})"></span>{html.escape(text)}</li>'
        for (r, g, b), text in entries
    ]
    return '<ul class="legend">' + "".join(rows) + "</ul>"


STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
.legend { list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: 0.4em 1.2em; }
.swatch { display: inline-block; width: 1em; height: 1em; margin-right: 0.35em; vertical-align: middle; }
.cards { display: flex; flex-wrap: wrap; gap: 1em; }
.card { margin: 0; border: 1px solid #ccc; padding: 0.4em; }
.pics img { height: 160px; margin-right: 0.2em; image-rendering: pixelated; }
figcaption { font-size: 0.85em; }
#status { margin-top: 2em; font-size: 0.85em; color: #555; }
"""

SCRIPT = """
window.addEventListener("load", () => {
  const pics = Array.from(document.images);
  const missing = pics.filter((p) => !p.complete || p.naturalWidth === 0);
  document.body.dataset.picturesMissing = missing.length;
  document.getElementById("status").textContent = missing.length
    ? `${missing.length} of ${pics.length} pictures are missing: keep this page beside its folders`
    : `all ${pics.length} pictures loaded`;
});
"""


def section(key: str, title: str, cards: list[str]) -> str:
    return f'<section id="{key}"><h2>{title}</h2><div class="cards">{"".join(cards)}</div></section>'


def truth_index(pool: SegDataset, image_id: str, task: Task) -> np.ndarray | None:
    """The pool's own labels of `image_id` as one index map (ExportItem.index_map), None where it has none."""
    if not pool.has_labels(image_id):
        return None
    return task.export_item(pool.load(image_id, with_image=False), pool.image_path(image_id)).index_map()


def write_html(
    folder: Path,
    items: Iterable[ExportItem],
    class_names: list[str],
    scores: dict[str, float],
    pool: SegDataset,
    task: Task,
) -> list[str]:
    """index.html and its pictures (see the module docstring) from the export's items (strong, then pseudo in
    review order); scores: id -> expected errors (review.py); the ground truth from `pool` as `task` reads it."""
    strong, pseudo, first = [], [], None
    for item in items:
        first = first or item
        truth = truth_index(pool, item.id, task) if item.source == "pseudo" else None
        urls = write_pictures(folder, item, truth)
        if item.source == "pseudo":
            pseudo.append(card(item, urls, len(pseudo) + 1, scores[item.id]))
        else:
            strong.append(card(item, urls, None, None))
    body = [
        "<h1>Pseudo-labels to review</h1>",
        f"<p>{task.name} task: {len(pseudo)} pseudo-labelled images, the most errors the annotation network expects "
        f"in them first (review.csv), then the {len(strong)} strong labels. Each: the image, its labels over it, and "
        "the ground truth where the pool has it.</p>",
        legend(first, class_names),
        section("pseudo", f"Pseudo-labels ({len(pseudo)})", pseudo),
        section("strong", f"Strong labels ({len(strong)})", strong),
        '<p id="status">pictures loading</p>',
    ]
    page = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>budgetseg review</title>'
        f"<style>{STYLE}</style></head>\n<body>\n" + "\n".join(body) + f"\n<script>{SCRIPT}</script>\n</body></html>\n"
    )
    write_text(folder / "index.html", page)
    return ["index.html", "images", "overlays"] + (["truth"] if (folder / "truth").is_dir() else [])
