"""The training data path: batches read from disk by worker processes, and DDP steps that every rank can take."""

import datetime
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from budgetseg.config import ModelConfig, TrainConfig
from budgetseg.data.readers import open_dataset
from budgetseg.dist import Dist, loader_workers
from budgetseg.engine.batches import Batches, TrainSet
from budgetseg.engine.train import train
from budgetseg.models.encoders import encoder_mean_std
from budgetseg.tasks import make_task

MEAN, STD = encoder_mean_std("tf_efficientnet_lite0")


def _weights(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_worker_processes_make_the_same_batches_and_weights(tiny_data, tmp_path):
    ds = open_dataset("voc", tiny_data, "train")
    task = make_task("semantic", ds.class_names)
    sets = [TrainSet(ds, ds.ids[:6], task), TrainSet(ds, ds.ids[6:], task)]
    cfg = TrainConfig(iterations=3, batch_size=4, epoch_iters=2, strong_fraction=0.5, pseudo_cutmix=True)
    results = []
    for workers in (0, 2):
        torch.manual_seed(0)
        model, _ = task.build_model(ModelConfig(encoder_weights=None))
        kw = dict(size=64, mean=MEAN, std=STD, seed=3, resume=False, workers=workers, log=lambda s: None)
        train(model, sets, task, cfg, tmp_path / f"w{workers}", **kw)
        results.append(_weights(model))
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])


def test_training_sets_hold_ids_not_images(tiny_data):
    """Memory flat in the pool size: a set keeps its ids; images are decoded when a batch draws them."""
    ds = open_dataset("voc", tiny_data, "train")
    task = make_task("semantic", ds.class_names)
    s = TrainSet(ds, list(ds.ids), task)
    assert not any(isinstance(v, np.ndarray | list) and k != "ids" for k, v in vars(s).items())
    batch = Batches([s], TrainConfig(batch_size=2), 64, 0, Dist())[5]
    assert batch[0].shape == (2, 64, 64, 3) and batch[1].shape == (2, 64, 64)
    image, target = s.get(0)
    np.testing.assert_array_equal(image, ds.load(ds.ids[0]).image)
    np.testing.assert_array_equal(target, ds.load(ds.ids[0]).semantic)


def test_loader_workers_follow_the_machine():
    assert loader_workers(3, Dist()) == 3
    assert loader_workers(None, Dist()) == (0 if len(os.sched_getaffinity(0)) <= 2 else min(4, os.cpu_count() // 2))


class ArraySet:
    """A training set of in-memory instance targets (the DDP test needs one rank's crops to hold no object)."""

    pseudo = False

    def __init__(self, targets: list[np.ndarray]):
        self.targets = targets

    def __len__(self) -> int:
        return len(self.targets)

    def get(self, k: int):
        rng = np.random.default_rng(k)
        return rng.integers(0, 255, (*self.targets[k].shape[:2], 3), dtype=np.uint8), self.targets[k]


def _instance_rank(rank: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=60)
    )
    try:
        with_object = np.zeros((64, 64, 2), np.uint8)
        with_object[10:40, 10:40] = (1, 1)  # class 1, instance 1
        empty = np.zeros((64, 64, 2), np.uint8)
        # strong_fraction 0.5 at batch 2: item 0 of a batch comes from set 0, item 1 from set 1, and rank r takes
        # item r, so rank 1 trains on object-less crops only
        sets = [ArraySet([with_object] * 2), ArraySet([empty] * 2)]
        task = make_task("instance", ["background", "a", "b"], ModelConfig(steps=3))
        torch.manual_seed(0)
        model, _ = task.build_model(ModelConfig(encoder_weights=None, steps=3))
        cfg = TrainConfig(iterations=2, batch_size=2, epoch_iters=2, strong_fraction=0.5, scale_min=1, scale_max=1)
        d = Dist(rank, 2)
        kw = dict(size=64, mean=MEAN, std=STD, seed=0, resume=False, d=d, log=lambda s: None)
        train(model, sets, task, cfg, Path(out), **kw)
        if rank == 0:
            torch.save(_weights(model), f"{out}/weights0.pt")
        torch.distributed.barrier()
        if rank == 1:
            torch.save(_weights(model), f"{out}/weights1.pt")
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_instance_ddp_step_when_a_rank_has_no_object(tmp_path):
    """Every RSIS head must reach the loss on every rank: DDP's all-reduce waits for each parameter's gradient
    (the step failed when a rank's crops held no object)."""
    torch.multiprocessing.spawn(_instance_rank, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2)
    a, b = torch.load(tmp_path / "weights0.pt"), torch.load(tmp_path / "weights1.pt")
    params = [k for k in a if "running_" not in k and "num_batches" not in k]  # BatchNorm statistics are per rank
    assert all(torch.equal(a[k], b[k]) for k in params)  # the ranks took the same steps


def test_a_run_resumes_with_other_speed_settings_and_older_config_files(tmp_path):
    import yaml

    from budgetseg.config import RunConfig, load_config, saved_config_diff, to_dict

    cfg = load_config(None, ["data.num_workers=2"])
    saved = to_dict(cfg)
    del saved["annotator"]["amp"], saved["segmenter"]["deterministic"]  # a config.yaml written before these keys
    saved["data"]["num_workers"], saved["segmenter"]["log_every"] = 0, 5  # speed only
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(saved))
    assert saved_config_diff(path, cfg) == []
    saved["segmenter"]["lr"] = 0.5
    path.write_text(yaml.safe_dump(saved))
    assert saved_config_diff(path, cfg) == ["segmenter.lr"]
    path.write_text(yaml.safe_dump({"annotator": {"no_such_key": 1}}))
    assert saved_config_diff(path, RunConfig()) == ["its layout"]


def _sync_bn_rank(rank: int, store: str, out: str) -> None:
    torch.distributed.init_process_group("nccl", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        torch.cuda.set_device(rank)
        task = make_task("semantic", ["background", "a", "b"])
        model, _ = task.build_model(ModelConfig(encoder_weights=None))
        d = Dist(rank, 2, torch.device("cuda", rank))
        from budgetseg.engine.train import prepare_model

        model = prepare_model(model, TrainConfig(sync_bn=True), d, print)
        names = {type(m).__name__ for m in model.modules()}
        if rank == 0:
            (Path(out) / "names.txt").write_text("\n".join(sorted(names)))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="SyncBatchNorm needs two GPUs")
def test_sync_bn_converts_every_batchnorm(tmp_path):
    torch.multiprocessing.spawn(_sync_bn_rank, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2)
    names = (tmp_path / "names.txt").read_text().split()
    assert "BatchNorm2d" not in names and "BatchNormAct2d" not in names
    assert "SyncBatchNorm" in names or "SyncBatchNormAct" in names


def _pseudo_dir(ds, ids, root: Path) -> Path:
    """Pseudo-labels for `ids` as semantic/pseudo.py leaves them (labels/<id>.png): the ground truth, here."""
    from budgetseg.data.sample import encode_label_png

    (root / "labels").mkdir(parents=True)
    for i in ids:
        with open(root / "labels" / f"{i}.png", "wb") as f:
            encode_label_png(ds.load(i).semantic, f)
    return root


def test_weak_views_share_the_geometry_and_cutmix_of_the_strong_ones(tiny_data, tmp_path):
    from budgetseg.engine.batches import batch_plan, make_batch

    ds = open_dataset("voc", tiny_data, "train")
    task = make_task("semantic", ds.class_names)
    sets = [
        TrainSet(ds, ds.ids[:6], task),
        TrainSet(ds, ds.ids[6:], task, task.pseudo_labels(_pseudo_dir(ds, ds.ids[6:], tmp_path))),
    ]
    base = dict(batch_size=6, strong_fraction=0.5, pseudo_cutmix=True)
    for it in range(3):
        plan = batch_plan(sets, 6, it, 0.5)
        plain = make_batch(sets, plan, TrainConfig(**base, pseudo_color_aug=True), 64, 0)
        assert plain.weak.numel() == 0 and not plain.online.any()
        b = make_batch(sets, plan, TrainConfig(**base, pseudo_color_aug=True, consistency=1.0), 64, 0)
        assert torch.equal(b.images, plain.images) and torch.equal(b.targets, plain.targets)  # the same batch
        assert b.online.tolist() == [False] * 3 + [True] * 3
        assert torch.equal(b.weak[:3], b.images[:3])  # strong images: no photometric augmentation
        assert not torch.equal(b.weak[3:], b.images[3:])  # pseudo-labelled ones: colour jitter and cutout
        # without colour augmentation the two views differ in nothing, CutMix boxes included
        c = make_batch(sets, plan, TrainConfig(**base, consistency=1.0), 64, 0)
        assert torch.equal(c.weak, c.images)


def test_consistency_loss_counts_confident_pixels_only():
    task = make_task("semantic", ["background", "a", "b"])
    teacher = torch.zeros(1, 3, 2, 2)
    teacher[0, 2, 0, :] = 10.0  # top row: class 2, softmax ~1.0; bottom row: uniform, 1/3
    logits = torch.zeros(1, 3, 2, 2)  # the student is uniform everywhere: cross-entropy log 3 per pixel
    loss = task.consistency_loss(logits, teacher, 0.95)
    assert loss.item() == pytest.approx(np.log(3) * 2 / 4)  # 2 confident pixels of 4
    assert task.consistency_loss(logits, teacher, 1.01).item() == 0.0


def test_consistency_changes_training_and_stays_reproducible(tiny_data, tmp_path):
    ds = open_dataset("voc", tiny_data, "train")
    task = make_task("semantic", ds.class_names)
    sets = [
        TrainSet(ds, ds.ids[:6], task),
        TrainSet(ds, ds.ids[6:], task, task.pseudo_labels(_pseudo_dir(ds, ds.ids[6:], tmp_path))),
    ]
    results = []
    for k, weight in enumerate((0.0, 1.0, 1.0)):
        torch.manual_seed(0)
        model, _ = task.build_model(ModelConfig(encoder_weights=None))
        cfg = TrainConfig(iterations=2, batch_size=4, strong_fraction=0.5, consistency=weight, consistency_threshold=0)
        kw = dict(size=64, mean=MEAN, std=STD, seed=3, resume=False, log=lambda s: None)
        train(model, sets, task, cfg, tmp_path / f"r{k}", **kw)
        results.append(_weights(model))
    keys = [k for k in results[0] if "running_" not in k]
    assert not all(torch.equal(results[0][k], results[1][k]) for k in keys)
    assert all(torch.equal(results[1][k], results[2][k]) for k in results[1])


def test_color_aug_and_cutmix_reach_the_strong_images_and_key_the_annotator_cache(tiny_data):
    from budgetseg.config import load_config
    from budgetseg.engine.batches import batch_plan, make_batch
    from budgetseg.stages import annotator_key

    ds = open_dataset("voc", tiny_data, "train")
    sets = [TrainSet(ds, ds.ids[:8], make_task("semantic", ds.class_names))]
    plan = batch_plan(sets, 8, 0, None)
    plain = make_batch(sets, plan, TrainConfig(batch_size=8, pseudo_color_aug=True, pseudo_cutmix=True), 64, 0)
    mixed = make_batch(sets, plan, TrainConfig(batch_size=8, cutmix=True), 64, 0)
    jitter = make_batch(sets, plan, TrainConfig(batch_size=8, color_aug=True), 64, 0)
    # the pseudo-only options leave strong images alone; cutmix pastes boxes (image and labels), colour_aug jitters
    bare = make_batch(sets, plan, TrainConfig(batch_size=8), 64, 0)
    assert torch.equal(plain.images, bare.images) and torch.equal(plain.targets, bare.targets)
    assert not torch.equal(mixed.images, plain.images) and not torch.equal(mixed.targets, plain.targets)
    changed = (mixed.images != plain.images).any(-1)  # (B, S, S): pasted pixels
    assert changed.float().mean(dim=(1, 2)).max() > 0.05
    assert (
        not torch.equal(jitter.images, plain.images) and (jitter.targets == 255).sum() >= (plain.targets == 255).sum()
    )
    cfg = load_config(None, [f"data.root={tiny_data}"])
    strong = ds.ids[:8]
    on = load_config(None, [f"data.root={tiny_data}", "annotator.cutmix=true"])
    assert annotator_key(on, strong) != annotator_key(cfg, strong)
