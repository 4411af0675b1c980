"""export --to html: a review page in review order, strong labels apart, a legend, the ground truth beside where
the pool has it; rendered in headless Chromium from a copy of the folder (make test installs Debian's chromium)."""

import csv
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from fixtures_data import write_png
from PIL import Image
from test_export import NAMES, PSEUDO, STRONG, make_run

from budgetseg.cli import main
from budgetseg.loop.export import export_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HEADLESS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=5000",
]


class Page(HTMLParser):
    """The cards (data attributes and picture sources) and legend entries of an exported page."""

    def __init__(self, text: str):
        super().__init__()
        self.cards: list[dict] = []
        self.legend: list[str] = []
        self.body: dict = {}
        self._in_legend = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "figure":
            self.cards.append({**a, "pictures": []})
        elif tag == "img" and self.cards:
            self.cards[-1]["pictures"].append(a["src"])
        elif tag == "ul" and a.get("class") == "legend":
            self._in_legend = True
        elif tag == "body":
            self.body = a

    def handle_endtag(self, tag):
        if tag == "ul":
            self._in_legend = False

    def handle_data(self, data):
        if self._in_legend and data.strip():
            self.legend.append(data.strip())


def give_p1_truth(run: Path) -> None:
    """The pool's own masks for pseudo-labelled p1 (as fashion-scenes has for every image): truth to show beside."""
    voc = run.parent / "voc"
    sem = np.zeros((7, 5), np.uint8)
    sem[0:3, 0:3] = 2
    write_png(voc / "SegmentationClass" / "p1.png", sem)
    write_png(voc / "SegmentationObject" / "p1.png", (sem > 0).astype(np.uint8))


@pytest.mark.parametrize("task", ["semantic", "instance"])
def test_the_page_lists_pseudo_labels_in_review_order_and_strong_labels_apart(tmp_path, task):
    run = make_run(tmp_path, task)
    give_p1_truth(run)
    out = tmp_path / "review"
    res = export_run(run, "html", out)
    assert res["pseudo_images"] == 2 and "index.html" in res["files"]
    page = Page((out / "index.html").read_text())
    with open(out / "review.csv", newline="") as f:
        order = [row["id"] for row in csv.DictReader(f)]
    pseudo = [c for c in page.cards if c["data-source"] == "pseudo"]
    assert [c["data-id"] for c in pseudo] == order and sorted(order) == PSEUDO
    assert [c["data-rank"] for c in pseudo] == ["1", "2"]
    assert [c["data-id"] for c in page.cards if c["data-source"] == "strong"] == STRONG
    by_id = {c["data-id"]: c for c in page.cards}
    assert by_id["p1"]["pictures"] == ["images/p1.jpg", "overlays/p1.jpg", "truth/p1.jpg"]
    assert by_id["p2"]["pictures"] == ["images/p2.png", "overlays/p2.jpg"]  # no truth for it in the pool
    for card in page.cards:
        for src in card["pictures"]:
            assert (out / src).is_file()
    if task == "semantic":
        assert page.legend[: len(NAMES) - 1] == NAMES[1:]
    assert page.legend[-1].startswith("ignored")
    overlay = np.asarray(Image.open(out / "overlays" / "s1.jpg"))
    assert overlay.shape[:2] == (6, 8)


def test_a_review_page_of_k_and_the_cli(tmp_path, capsys):
    run = make_run(tmp_path, "semantic")
    assert main(["export", str(run), "--to", "html", "--out", str(tmp_path / "r"), "--review", "1"]) == 0
    page = Page((tmp_path / "r" / "index.html").read_text())
    assert [c["data-id"] for c in page.cards if c["data-source"] == "pseudo"] == ["p1"]  # the less sure one
    assert "html" in capsys.readouterr().out


def chromium(*args: str, cwd: Path) -> str:
    profile = cwd / "profile"
    cmd = [CHROMIUM, *HEADLESS, f"--user-data-dir={profile}", *args]
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (make test installs it)")
def test_the_page_renders_in_headless_chromium_from_a_copied_folder(tmp_path):
    run = make_run(tmp_path, "instance")
    give_p1_truth(run)
    export_run(run, "html", tmp_path / "review")
    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(tmp_path / "review", moved)  # relative links: the page works wherever it is copied
    shutil.rmtree(tmp_path / "review")
    url = (moved / "index.html").as_uri()
    dom = chromium("--dump-dom", url, cwd=tmp_path)
    rendered = Page(dom)
    assert rendered.body.get("data-pictures-missing") == "0" and "all 9 pictures loaded" in dom
    shot = tmp_path / "shot.png"
    chromium(f"--screenshot={shot}", "--window-size=900,700", url, cwd=tmp_path)
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape == (700, 900, 3) and pixels.std() > 10  # not a blank page
    (moved / "overlays" / "p1.jpg").unlink()  # a page moved without one of its pictures says so
    assert 'data-pictures-missing="1"' in chromium("--dump-dom", url, cwd=tmp_path)
