"""pseudo.image_labels: semantic pseudo-labels restricted to each image's image-level classes (IL), priced."""

import json

import numpy as np
import pytest
import torch
from test_pipeline import TINY

from budgetseg.config import load_config
from budgetseg.data.readers import open_dataset
from budgetseg.data.sample import read_label_png
from budgetseg.errors import BudgetsegError
from budgetseg.pipeline import run
from budgetseg.semantic.task import restrict_to_image_labels


def test_restriction_keeps_background_and_the_images_classes_renormalised():
    probs = torch.tensor([[0.1, 0.6, 0.3, 0.0], [0.2, 0.2, 0.2, 0.4]])[:, :, None, None].expand(2, 4, 1, 2)
    out = restrict_to_image_labels(probs, [{2: 1}, {}])
    # image 0 holds class 2 only: class 1's 0.6 goes, 0.1 / 0.3 renormalise to 0.25 / 0.75 and class 2 wins
    np.testing.assert_allclose(out[0, :, 0, 0], [0.25, 0.0, 0.75, 0.0], rtol=1e-6)
    # image 1 holds nothing: all background
    np.testing.assert_allclose(out[1, :, 0, 1], [1.0, 0.0, 0.0, 0.0], rtol=1e-6)
    assert out.shape == probs.shape


def test_config_refuses_image_labels_outside_the_semantic_task():
    with pytest.raises(BudgetsegError, match="pseudo.image_labels"):
        load_config("configs/fashion_instance.yaml", ["pseudo.image_labels=true"])
    with pytest.raises(BudgetsegError, match="data.weak_labels needs pseudo.image_labels"):
        load_config(None, ["data.weak_labels=weak.csv"])
    with pytest.raises(BudgetsegError, match=r"data.weak_labels needs model.class_inputs \(W-RSIS\)"):
        load_config("configs/fashion_instance.yaml", ["data.weak_labels=weak.csv"])  # RSIS reads no counts


@pytest.mark.slow
def test_pseudo_labels_hold_only_each_images_own_classes_and_the_labels_are_priced(tiny_data, tmp_path):
    base = [f"data.root={tiny_data}", *TINY, "controls=false"]
    plain, restricted = tmp_path / "plain", tmp_path / "restricted"
    run(load_config(None, base), plain, until="pseudo")
    run(load_config(None, [*base, "pseudo.image_labels=true"]), restricted, until="pseudo")
    pool = open_dataset("voc", tiny_data, "train")
    unlabeled = (restricted / "split" / "unlabeled.txt").read_text().split()
    outside = {"plain": 0, "restricted": 0}
    for i in unlabeled:
        allowed = {0, *np.unique(pool.load(i, with_image=False).instance_classes).tolist()}
        for name, folder in (("plain", plain), ("restricted", restricted)):
            raw = read_label_png(folder / "pseudo" / "raw" / f"{i}.png")
            outside[name] += int(np.isin(raw, list(allowed), invert=True).sum())
    assert outside["restricted"] == 0 and outside["plain"] > 0  # the restriction had something to remove
    cost, plain_cost = (json.loads((f / "cost.json").read_text()) for f in (restricted, plain))
    assert cost["n_weak"] == len(unlabeled) == 16 and plain_cost["n_weak"] == 0
    assert cost["weak_labels"]["seconds"] == pytest.approx(16 * cost["seconds_per_image"]["il"])
    assert cost["total"]["seconds"] == pytest.approx(plain_cost["total"]["seconds"] + cost["weak_labels"]["seconds"])
