"""The documentation holds together: every relative link and image in README.md and docs/**/*.md points at a file
that exists (and, into a markdown page, at a heading it has), the README stays short, every results folder says
how it was made, and no page names a run folder without the command that makes it. No network."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 250

FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", re.M | re.S)
CODE_SPAN = re.compile(r"(`+)(?!`).+?(?<!`)\1(?!`)", re.S)
# [text](target) and ![alt](target), the target optionally in <...> and followed by a "title"
INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)", re.M)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", re.M)
NAME = r"([A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*)"  # a folder name, without a sentence's full stop after it
RUN_FOLDER = re.compile(r"(?<![\w./-])runs/" + NAME)
MADE_BY = re.compile(r"--out(?:\s+|=)runs/" + NAME)


def doc_pages(root: Path = ROOT) -> list[Path]:
    """README.md and every markdown page under docs/."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def prose(text: str) -> str:
    """`text` without fenced code blocks and code spans, where brackets are code, not links."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def link_targets(text: str) -> list[str]:
    """The targets of the inline links, images and reference definitions of a markdown text."""
    body = prose(text)
    found = INLINE.findall(body) + REFERENCE.findall(body)
    return [t[1:-1].strip() if t.startswith("<") else t for t in found]


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: markup dropped, lower case, punctuation removed, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = text.replace("`", "").lower()
    kept = "".join(ch for ch in text if ch in " -_" or unicodedata.category(ch)[0] in "LNM")
    return kept.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a markdown page's headings (repeats numbered -1, -2, ... as GitHub does)."""
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text(encoding="utf-8"))):
        s = slug(heading)
        n = seen.get(s, 0)
        seen[s] = n + 1
        out.add(s if n == 0 else f"{s}-{n}")
    return out


def broken_links(page: Path) -> list[str]:
    """'target (why)' for each relative link of `page` whose file, or heading, does not exist."""
    out = []
    for target in link_targets(page.read_text(encoding="utf-8")):
        if SCHEME.match(target) or target.startswith("//"):
            continue  # a URL: not checked (no network)
        path, _, anchor = target.partition("#")
        dest = (page.parent / unquote(path)).resolve() if path else page
        if not dest.exists():
            out.append(f"{target} (no such file)")
        elif anchor and dest.is_file() and dest.suffix == ".md" and unquote(anchor).lower() not in anchors(dest):
            out.append(f"{target} (no such heading in {dest.name})")
    return out


def unmade_run_folders(page: Path) -> list[str]:
    """run folders (runs/NAME...) that `page` names without a command making them (`--out runs/NAME...`;
    runs/demo: `make demo`)."""
    text = page.read_text(encoding="utf-8")
    made = set(MADE_BY.findall(text)) | ({"demo"} if "make demo" in text else set())
    return sorted({f"runs/{name}" for name in RUN_FOLDER.findall(text) if name not in made})


@pytest.mark.parametrize("page", doc_pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_images_resolve(page: Path):
    assert broken_links(page) == []


@pytest.mark.parametrize("page", doc_pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_page_names_a_run_folder_without_its_command(page: Path):
    assert unmade_run_folders(page) == []


def test_readme_stays_short_and_starts_with_the_two_commands():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES
    top = "\n".join(lines[:12])
    assert "make demo" in top and "make test" in top


def test_every_results_folder_says_how_it_was_made():
    results = ROOT / "docs" / "results"
    index = (results / "README.md").read_text(encoding="utf-8")
    folders = sorted(p for p in results.iterdir() if p.is_dir())
    assert folders
    for folder in folders:
        readme = folder / "README.md"
        assert readme.is_file(), f"{folder.name} has no README.md"
        assert "budgetseg " in readme.read_text(encoding="utf-8"), f"{folder.name}/README.md gives no command"
        assert f"({folder.name}/)" in index, f"docs/results/README.md does not index {folder.name}"


def test_the_checker_finds_a_broken_link_and_ignores_code(tmp_path: Path):
    (tmp_path / "there.md").write_text("# A heading: with `code`, punctuation!\n\ntext\n")
    (tmp_path / "fig.png").write_bytes(b"")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](there.md) ![fig](fig.png) [anchor](there.md#a-heading-with-code-punctuation) [web](https://x.org/y)\n"
        "[self](#top) [gone](missing.md) ![gone too](img/missing.png) [bad anchor](there.md#nope)\n"
        "`[code](not-a-link.md)`\n\n```sh\necho [x](also-not-a-link.md)\n```\n\n[ref]: <refs/missing.md>\n"
        "# Top\n"
    )
    assert broken_links(page) == [
        "missing.md (no such file)",
        "img/missing.png (no such file)",
        "there.md#nope (no such heading in there.md)",
        "refs/missing.md (no such file)",
    ]


def test_the_checker_finds_a_run_folder_without_its_command(tmp_path: Path):
    page = tmp_path / "page.md"
    page.write_text("`budgetseg sweep c.yaml --out runs/made --n 25` writes runs/made/n0025; runs/other/n0200 is?\n")
    assert unmade_run_folders(page) == ["runs/other"]
