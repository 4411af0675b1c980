"""Peak memory of `predict`, `evaluate` and `select` on one huge image (12000 x 12000 px by default, a PNG of
well under a megabyte): inference memory should follow the network's working resolution, not the input's.
Prints figures (one JSON object with --json).

    GLIBC_TUNABLES=... .venv/bin/python benchmarks/memory_huge.py [--side 12000] [--json]

The network is an untrained semantic one (the memory does not depend on its weights) saved at a 128 px letterbox
side; evaluate scores it on a VOC layout holding the image and a label map of its size; select picks 1 of the huge
image and a small one (diverse: both are decoded for features). Peak RSS is that of the command's process
(os.wait4, as benchmarks/memory.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from memory import run_peak  # this script's folder is on sys.path
from PIL import Image

from budgetseg.config import DataConfig, load_config, save_config
from budgetseg.data.sample import encode_label_png
from budgetseg.modelfile import model_meta, save_model
from budgetseg.tasks import make_task

NAMES = ["background", "thing", "other"]


def huge_files(root: Path, side: int) -> None:
    """root/voc: JPEGImages/huge.png (side x side, a few bands of colour: compresses to well under a megabyte),
    SegmentationClass/huge.png, val.txt, classes.txt; root/photos: huge.png and a small photo."""
    voc = root / "voc"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation", "../photos"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    image = np.zeros((side, side, 3), np.uint8)
    label = np.zeros((side, side), np.uint8)
    for k in range(6):  # horizontal bands of two classes
        rows = slice(k * side // 6, (k + 1) * side // 6)
        image[rows] = (40 * k, 200 - 30 * k, 90)
        label[rows] = k % 3
    Image.fromarray(image).save(voc / "JPEGImages" / "huge.png")
    del image
    with open(voc / "SegmentationClass" / "huge.png", "wb") as f:
        encode_label_png(label, f)
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("huge\n")
    (voc / "classes.txt").write_text("\n".join(NAMES) + "\n")
    (root / "photos" / "huge.png").write_bytes((voc / "JPEGImages" / "huge.png").read_bytes())
    Image.fromarray(np.full((96, 128, 3), 120, np.uint8)).save(root / "photos" / "small.png")


def tiny_run(root: Path) -> Path:
    """A run folder whose segmenter is an untrained DeepLabv3+ at a 128 px side, over root/voc."""
    cfg = load_config(None, [f"data.root={root / 'voc'}", "data.size=128", "model.encoder_weights=none"])
    run = root / "run"
    save_config(run / "config.yaml", cfg)
    model, _ = make_task("semantic", NAMES, cfg.model).build_model(cfg.model)
    save_model(
        run / "segmenter" / "model.pt",
        model,
        model_meta("semantic", "segmenter", NAMES, cfg.model, DataConfig(size=128)),
    )
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=12000, help="image side in pixels (default 12000)")
    ap.add_argument("--json", action="store_true", help="print one JSON object only")
    a = ap.parse_args()
    say = (lambda *x: print(*x, file=sys.stderr)) if a.json else print
    cli = [sys.executable, "-m", "budgetseg.cli"]
    figures: dict = {"side": a.side}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        huge_files(root, a.side)
        run = tiny_run(root)
        size = (root / "photos" / "huge.png").stat().st_size
        say(f"{a.side} x {a.side} PNG of {size / 1e3:.0f} KB")
        figures["png_kb"] = round(size / 1e3)
        commands = {
            "predict": ["predict", str(run), str(root / "photos" / "huge.png"), "--out", str(root / "pred")],
            "evaluate": ["evaluate", str(run), "--val-root", str(root / "voc"), "--val-split", "val"],
            "select": ["select", "--images", str(root / "photos"), "--n", "1", "--out", str(root / "ids.txt")],
        }
        for name, args in commands.items():
            peak, secs = run_peak([*cli, *args])
            figures[f"{name}_peak_rss_mib"] = round(peak, 1)
            figures[f"{name}_seconds"] = round(secs, 1)
            say(f"{name}: peak RSS {peak:,.0f} MiB ({secs:.1f} s)")
    if a.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
