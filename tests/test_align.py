"""pseudo.align: per-class factors on f_theta's probabilities so that the class shares of its pseudo-labels match
the strong labels' (semantic/align.py)."""

import json

import numpy as np
import pytest
import torch
from test_pipeline import TINY

from budgetseg.config import load_config
from budgetseg.data.sample import read_label_png
from budgetseg.errors import BudgetsegError
from budgetseg.pipeline import run
from budgetseg.semantic.align import fit_factors
from budgetseg.semantic.task import aligned


def shares(labels: list[np.ndarray], c: int) -> np.ndarray:
    counts = sum(np.bincount(x.ravel().astype(np.int64), minlength=c) for x in labels)
    return counts / counts.sum()


def test_factors_give_a_class_that_seldom_wins_its_share_back():
    # four images of random class probabilities in which f_theta favours class 0 and class 2 seldom wins
    rng = np.random.default_rng(0)
    bias = np.array([1.5, 0.0, -0.5, 0.0])[:, None, None]
    probs = [torch.softmax(torch.from_numpy(rng.normal(0, 1, (4, 24, 24)) + bias), 0).numpy() for _ in range(4)]
    prior = np.array([0.4, 0.3, 0.3, 0.0])  # class 3: no strong pixel
    before = shares([p.argmax(0) for p in probs], 4)
    w = fit_factors(probs, prior)
    after = shares([(p * w[:, None, None]).argmax(0) for p in probs], 4)
    assert before[2] < 0.1 and after[2] == pytest.approx(0.3, abs=0.03)
    assert np.abs(after - prior).sum() < 0.06 < 0.5 < np.abs(before - prior).sum()
    assert w[3] < 1e-3 and w.max() == 1


def test_aligned_probabilities_are_renormalised_and_unit_factors_change_nothing():
    probs = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]]).T.reshape(1, 3, 1, 2)
    assert torch.allclose(aligned(probs, (1.0, 1.0, 1.0)), probs)
    p = aligned(probs, (0.5, 1.0, 4.0))
    assert torch.allclose(p.sum(1), torch.ones(1, 1, 2))
    assert p.argmax(1).tolist() == [[[2, 2]]]  # 0.3, 0.4 | 0.2, 0.5, 1.2


def test_config_refuses_align_in_the_instance_task():
    with pytest.raises(BudgetsegError, match="pseudo.align works for the semantic task only"):
        load_config("configs/fashion_instance.yaml", ["pseudo.align=true"])


@pytest.mark.slow
def test_pipeline_aligns_pseudo_labels_to_the_strong_shares_and_a_resumed_run_keeps_the_factors(tiny_data, tmp_path):
    out = tmp_path / "run"
    cfg = load_config(None, [f"data.root={tiny_data}", *TINY, "controls=false", "pseudo.align=true"])
    results = run(cfg, out)
    fit = json.loads((out / "pseudo" / "align.json").read_text())
    unlabeled = (out / "split" / "unlabeled.txt").read_text().split()
    assert sorted(fit["images"]) == sorted(unlabeled)  # 16 of them: all fit in the sample
    names = list(fit["factors"])
    summary = json.loads((out / "pseudo" / "summary.json").read_text())
    assert summary["align_factors"] == fit["factors"] and max(fit["factors"].values()) == 1
    raw = shares([read_label_png(out / "pseudo" / "raw" / f"{i}.png") for i in unlabeled], len(names))
    prior = np.array(list(fit["prior"].values()))
    assert np.abs(raw - prior).sum() < 0.1
    assert np.isfinite(results["segmentation_net"]["miou"])
    assert "aligned to the strong labels' class shares" in (out / "log.txt").read_text()
    # interrupted before its summary: the resumed run labels with the factors kept in align.json, not new ones
    fit["factors"] = {n: 1.0 if n == names[1] else 1e-6 for n in names}
    (out / "pseudo" / "align.json").write_text(json.dumps(fit))
    (out / "pseudo" / "summary.json").unlink()
    for f in (out / "pseudo" / "raw").iterdir():
        f.unlink()
    run(cfg, out, resume=True)
    assert all((read_label_png(out / "pseudo" / "raw" / f"{i}.png") == 1).all() for i in unlabeled)
    assert json.loads((out / "pseudo" / "summary.json").read_text())["align_factors"] == fit["factors"]
