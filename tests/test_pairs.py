"""pseudo.pair_margin: where f_theta's two likeliest classes are close, the pseudo-label is the pair and g_phi is
trained with -log(p_a + p_b) there."""

import json

import numpy as np
import pytest
import torch
from test_pipeline import TINY

from budgetseg.config import TrainConfig, load_config
from budgetseg.data.readers import open_dataset
from budgetseg.data.sample import IGNORE, encode_label_png, read_label_png
from budgetseg.engine.batches import TrainSet, batch_plan, make_batch
from budgetseg.errors import BudgetsegError
from budgetseg.pipeline import run
from budgetseg.semantic.task import pair_cross_entropy
from budgetseg.tasks import make_task


def _png(path, arr) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        encode_label_png(np.asarray(arr, np.uint8), f)


def test_pair_loss_is_minus_log_of_the_pairs_probability():
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [2.0, 2.0, 2.0]]).T.reshape(1, 3, 1, 3)
    p = logits.softmax(1)[0, :, 0]  # (C, 3 pixels)
    target = torch.tensor([[[1, 0], [2, IGNORE], [IGNORE, 1]]])[:, None]  # (1, 1, 3, 2): pair, single, ignored
    got = pair_cross_entropy(logits, target)[0, 0]
    p = p.numpy()
    want = [-np.log(p[1, 0] + p[0, 0]), -np.log(p[2, 1]), 0.0]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)


def test_loss_without_pairs_equals_cross_entropy():
    task = make_task("semantic", ["background", "a", "b"])
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, generator=g)
    labels = torch.randint(0, 3, (2, 4, 5), generator=g)
    labels[0, 0, :2] = IGNORE
    w = torch.tensor([1.0, 0.5])
    paired = torch.stack([labels, torch.full_like(labels, IGNORE)], -1)
    assert task.loss(logits, paired, w)[0].item() == pytest.approx(task.loss(logits, labels, w)[0].item(), rel=1e-6)
    paired[1, 1, 1, 1] = (labels[1, 1, 1] + 1) % 3  # one pair: the loss on that pixel drops
    assert task.loss(logits, paired, w)[0].item() < task.loss(logits, labels, w)[0].item()


def test_decode_names_the_runner_up_only_within_the_margin():
    probs = torch.tensor([[0.50, 0.45, 0.05], [0.80, 0.10, 0.10], [0.20, 0.30, 0.50]]).T.reshape(1, 3, 1, 3)
    task = make_task("semantic", ["background", "a", "b"])
    plain = task.finish(task.decode(probs, 0, (1, 3), (1, 3)))
    assert plain.second is None
    pred = task.finish(task.decode(probs, 0, (1, 3), (1, 3), pair_margin=0.25))
    assert pred.label.tolist() == plain.label.tolist() == [[0, 0, 2]]
    assert pred.confidence.tolist() == plain.confidence.tolist() == [[128, 204, 128]]
    assert pred.second.tolist() == [[1, IGNORE, 1]]  # margins 0.05, 0.7, 0.2


def test_pseudo_target_takes_f_thetas_class_where_paired_even_if_the_quantile_dropped_it(tmp_path):
    raw, labels, pairs = [[1, 2, 3, 0]], [[1, IGNORE, IGNORE, 0]], [[IGNORE, 3, IGNORE, 1]]
    for name, arr in (("raw", raw), ("labels", labels), ("pairs", pairs)):
        _png(tmp_path / name / "x.png", arr)
    task = make_task("semantic", ["background", "a", "b", "c"])
    t = task.pseudo_labels(tmp_path).target("x", (1, 4))
    assert t.shape == (1, 4, 2)
    assert t[..., 0].tolist() == [[1, 2, IGNORE, 0]] and t[..., 1].tolist() == [[IGNORE, 3, IGNORE, 1]]
    (tmp_path / "pairs" / "x.png").unlink()
    assert task.pseudo_labels(tmp_path).target("x", (1, 4)).tolist() == labels  # no pairs: labels/ alone


def test_batches_mix_plain_labels_and_pairs(tiny_data, tmp_path):
    ds = open_dataset("voc", tiny_data, "train")
    task = make_task("semantic", ds.class_names)
    pseudo = ds.ids[6:]
    for i in pseudo:  # the ground truth as pseudo-labels, each foreground pixel paired with class 1
        gt = ds.load(i, with_image=False).semantic
        for name in ("raw", "labels"):
            _png(tmp_path / name / f"{i}.png", gt)
        _png(tmp_path / "pairs" / f"{i}.png", np.where((gt > 0) & (gt != IGNORE), 1, IGNORE))
    sets = [TrainSet(ds, ds.ids[:6], task), TrainSet(ds, pseudo, task, task.pseudo_labels(tmp_path))]
    cfg = TrainConfig(batch_size=4, strong_fraction=0.5, pseudo_color_aug=True, pseudo_cutmix=True)
    b = make_batch(sets, batch_plan(sets, 4, 0, 0.5), cfg, 64, 0)
    assert b.targets.shape == (4, 64, 64, 2)
    assert (b.targets[:2, ..., 1] == IGNORE).all()  # strong images: plain labels
    first, second = b.targets[2:, ..., 0], b.targets[2:, ..., 1]
    assert (second == 1).any() and ((second == 1) <= (first > 0)).all()  # pairs on foreground pixels only
    assert ((second == IGNORE) | (first != IGNORE)).all()  # cutout and padding drop both channels


def test_config_refuses_pair_margin_outside_the_semantic_task_or_range():
    with pytest.raises(BudgetsegError, match="pseudo.pair_margin"):
        load_config("configs/fashion_instance.yaml", ["pseudo.pair_margin=0.2"])
    with pytest.raises(BudgetsegError, match="pseudo.pair_margin"):
        load_config(None, ["pseudo.pair_margin=0"])


@pytest.mark.slow
def test_pipeline_writes_pairs_scores_them_and_trains_g_phi_on_them(tiny_data, tmp_path):
    out = tmp_path / "run"
    cfg = load_config(None, [f"data.root={tiny_data}", *TINY, "controls=false", "pseudo.pair_margin=0.5"])
    results = run(cfg, out)
    unlabeled = (out / "split" / "unlabeled.txt").read_text().split()
    pool, paired, pixels, n, hits, firsts = open_dataset("voc", tiny_data, "train"), 0, 0, 0, 0, 0
    for i in unlabeled:
        raw, second = (read_label_png(out / "pseudo" / d / f"{i}.png") for d in ("raw", "pairs"))
        assert ((second == IGNORE) | (second != raw)).all()  # the runner-up is another class
        gt = pool.load(i, with_image=False).semantic
        m = (second != IGNORE) & (gt != IGNORE)  # paired pixels with ground truth
        paired, pixels, n = paired + int((second != IGNORE).sum()), pixels + raw.size, n + int(m.sum())
        hits += int(((gt == raw) | (gt == second))[m].sum())
        firsts += int((gt == raw)[m].sum())
    summary = json.loads((out / "pseudo" / "summary.json").read_text())
    assert paired > 0 and summary["paired_fraction"] == pytest.approx(paired / pixels)
    assert summary["pair_accuracy"] == pytest.approx(hits / n)
    assert summary["pair_first_accuracy"] == pytest.approx(firsts / n) and firsts <= hits
    assert np.isfinite(results["segmentation_net"]["miou"])
    assert "paired" in (out / "log.txt").read_text()
