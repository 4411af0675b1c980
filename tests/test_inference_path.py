"""The inference path: engine.infer.predict's loader (worker processes, fixed batches), decoding on the device,
pseudo-label files written on threads, and pseudo-labelling, finalisation and evaluation split over processes
(gloo on CPU here; NCCL where there are GPUs)."""

import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from PIL import Image

from budgetseg import pseudo
from budgetseg.config import ModelConfig, PseudoConfig
from budgetseg.data.readers import open_dataset
from budgetseg.data.sample import encode_gray_png, encode_label_png, read_label_png
from budgetseg.data.transforms import letterbox
from budgetseg.dist import SINGLE, Dist
from budgetseg.engine.device import to_input
from budgetseg.engine.infer import predict
from budgetseg.engine.writer import Writer, writer_threads
from budgetseg.errors import BudgetsegError
from budgetseg.instance.task import InstanceTask
from budgetseg.pseudo import predict_pool
from budgetseg.semantic.metrics import SemanticEvaluator
from budgetseg.semantic.task import SemanticTask
from budgetseg.task import InferOptions

SIZE = 32  # the 64 px images are letterboxed down and their predictions resized back up
MEAN, STD = (0.5,) * 3, (0.5,) * 3
# the offline ImageNet encoder: a wholly untrained network's activations decay into denormals, 100x slower on CPU
MODEL = ModelConfig(steps=2)
PSEUDO = PseudoConfig(threshold=0.11, class_quantile=0.5, batch_size=5)  # keeps some of an untrained net's output
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def semantic_model(names: list[str]) -> torch.nn.Module:
    torch.manual_seed(0)
    return SemanticTask(names).build_model(MODEL)[0].eval()


def instance_model(names: list[str]) -> torch.nn.Module:
    """Untrained RSIS whose steps all emit an object (stop bias 10), with masks of its random weights."""
    torch.manual_seed(0)
    model = InstanceTask(names, steps=2).build_model(MODEL)[0].eval()
    torch.nn.init.constant_(model.stop_head.bias, 10.0)
    return model


def old_probabilities(model, ds, ids: list[str], batch_size: int):
    """(sample, probabilities (C, H, W) on the CPU) as engine.infer.predict and SemanticTask.decode made them before
    issue 11: the C float maps of each image went to the CPU."""
    task = SemanticTask(ds.class_names)
    with torch.no_grad():
        for lo in range(0, len(ids), batch_size):
            samples = [ds.load(i) for i in ids[lo : lo + batch_size]]
            boxes = [letterbox(s.image, SIZE) for s in samples]
            x = to_input(torch.from_numpy(np.stack([b[0] for b in boxes])), MEAN, STD, torch.device("cpu"))
            probs = task.infer(model, x)
            for j, (s, (_, hw)) in enumerate(zip(samples, boxes, strict=True)):
                p = probs[j, :, : hw[0], : hw[1]]
                if tuple(hw) != tuple(s.size):
                    p = torch.nn.functional.interpolate(p[None], size=s.size, mode="bilinear", align_corners=False)[0]
                yield s, p.cpu()


def old_semantic_maps(model, ds, ids: list[str], batch_size: int) -> dict[str, np.ndarray]:
    """raw/ and conf/ maps as semantic.pseudo.write_semantic computed them before issue 11 (max on the CPU)."""
    maps = {}
    for s, probs in old_probabilities(model, ds, ids, batch_size):
        conf, label = probs.max(0)
        maps[f"raw/{s.id}.png"] = label.numpy().astype(np.uint8)
        maps[f"conf/{s.id}.png"] = np.round(conf.numpy() * 255).astype(np.uint8)
    return maps


def test_pseudo_labels_are_the_old_pixels_with_or_without_loader_processes_and_threads(
    tiny_data, tmp_path, monkeypatch
):
    """The same pixels as before, in the same bytes whatever the loader processes and writer threads (PNG_STRATEGY
    changed the bytes once)."""
    ds = open_dataset("voc", tiny_data, "train")
    ids, model = list(ds.ids)[:10], semantic_model(ds.class_names)
    expected = old_semantic_maps(model, ds, ids, PSEUDO.batch_size)
    task = SemanticTask(ds.class_names)
    for workers, threads in ((0, 0), (2, 2)):
        monkeypatch.setattr(pseudo, "writer_threads", lambda device, world, n=threads: n)
        out = tmp_path / f"workers{workers}"
        predict_pool(model, task, ds, ids, out, PSEUDO, size=SIZE, mean=MEAN, std=STD, workers=workers)
        got = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*.png")}
        assert got.keys() == expected.keys()
        want = {k: png_bytes(v, palette=k.startswith("raw")) for k, v in expected.items()}  # as write_semantic
        assert [k for k in got if got[k] != want[k]] == []
        assert all(np.array_equal(read_label_png(out / k), v) for k, v in expected.items())


@pytest.mark.parametrize("name", ["semantic", "pairs", "instance", "w-rsis"])
def test_a_batch_decodes_to_what_its_images_decode_to_one_by_one(name):
    """decode_batch reduces and copies the images that need no resizing together: the same values as decode,
    image by image, for a batch of such images (whole or cropped letterbox regions) and one that is resized."""
    g = torch.Generator().manual_seed(0)
    names = ["background", "a", "b", "c"]
    hws, sizes = [(16, 16), (16, 11), (9, 16), (16, 16)], [(16, 16), (16, 11), (9, 16), (24, 20)]
    if name in ("semantic", "pairs"):
        task = SemanticTask(names)
        options = InferOptions(pair_margin=0.3 if name == "pairs" else None)
        raw = torch.randn(4, 4, 16, 16, generator=g).softmax(1)
    else:
        task, options = InstanceTask(names, steps=3, class_inputs=name == "w-rsis"), InferOptions()
        raw = {"masks": torch.randn(4, 3, 16, 16, generator=g), "classes": torch.randn(4, 3, 4, generator=g)}
        raw["stop"] = torch.tensor([[3.0, 2.0, -1.0]] * 4)
        if name == "w-rsis":
            raw["given"] = torch.tensor([[1, 3, 0], [2, 0, 0], [1, 1, 2], [3, 0, 0]])
    margin = {"pair_margin": options.pair_margin} if name in ("semantic", "pairs") else {}
    one_by_one = [
        task.finish(task.decode(raw, j, hw, size, **margin))
        for j, (hw, size) in enumerate(zip(hws, sizes, strict=True))
    ]
    batched = [task.finish(p) for p in task.decode_batch(raw, hws, sizes, options)]
    if name in ("semantic", "pairs"):
        for a, b, size in zip(one_by_one, batched, sizes, strict=True):
            assert b.label.shape == size and b.label.flags.c_contiguous
            assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True) if x is not None)
            assert (a.second is None) == (b.second is None) == (name == "semantic")
        return
    assert sum(map(len, batched)) > 4
    for a, b, size in zip(one_by_one, batched, sizes, strict=True):
        assert [(c, s) for _, c, s in a] == [(c, s) for _, c, s in b]
        assert all(m.shape == size and np.array_equal(m, n) for (m, _, _), (n, _, _) in zip(a, b, strict=True))


def test_evaluation_scores_the_old_argmax(tiny_data):
    val = open_dataset("voc", tiny_data, "val")
    model, task = semantic_model(val.class_names), SemanticTask(val.class_names)
    ev, old = task.evaluator(), SemanticEvaluator(val.class_names)
    kw = dict(size=SIZE, mean=MEAN, std=STD, batch_size=3)
    for sample, pred in predict(model, val, list(val.ids), task, workers=1, **kw):
        assert pred.label.dtype == np.uint8 and pred.label.shape == sample.size
        task.score(ev, sample, pred)
    for sample, probs in old_probabilities(model, val, list(val.ids), 3):
        old.process(sample.semantic, probs.argmax(0).numpy().astype(np.uint8))
    assert torch.equal(ev.cm.mat, old.cm.mat)


def png_bytes(arr: np.ndarray, palette: bool) -> bytes:
    buf = io.BytesIO()
    (encode_label_png if palette else encode_gray_png)(arr, buf)
    return buf.getvalue()


def test_label_pngs_keep_pixels_and_palette():
    label = np.random.default_rng(0).integers(0, 12, (37, 53), dtype=np.uint8)
    with Image.open(io.BytesIO(png_bytes(label, palette=True))) as im:
        assert im.mode == "P" and im.getpalette()[: 3 * 3] == [0, 0, 0, 128, 0, 0, 0, 128, 0]
        assert np.array_equal(np.asarray(im), label)
    with Image.open(io.BytesIO(png_bytes(label, palette=False))) as im:
        assert im.mode == "L" and np.array_equal(np.asarray(im), label)


def test_no_writer_thread_takes_a_core_from_the_forward_pass_on_cpu(monkeypatch):
    cores = len(os.sched_getaffinity(0))
    monkeypatch.setattr(torch, "get_num_threads", lambda: cores)
    assert writer_threads(torch.device("cpu")) == 0
    assert writer_threads(torch.device("cuda")) == min(4, cores - 1)


def test_writer_bounds_its_queue_and_raises_a_jobs_error_in_the_caller():
    running, most, lock = [0], [0], threading.Lock()

    def job(k: int) -> None:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        if k == 5:
            raise ValueError("job 5 failed")

    with pytest.raises(ValueError, match="job 5"):
        with Writer(threads=2, pending=3) as writer:
            for k in range(12):
                writer.submit(job, k)
                assert len(writer.jobs) <= 3  # queued or running: memory does not grow with the images
    assert most[0] <= 2


def test_a_failed_write_stops_pseudo_labelling_with_its_error(tiny_data, tmp_path):
    ds = open_dataset("voc", tiny_data, "train")
    (tmp_path / "file").write_text("not a folder")
    task = SemanticTask(ds.class_names)
    with pytest.raises(BudgetsegError, match="cannot write"):
        model = semantic_model(ds.class_names)
        predict_pool(model, task, ds, list(ds.ids)[:3], tmp_path / "file", PSEUDO, size=SIZE, mean=MEAN, std=STD)


# ------------------------------------------------------------------------------------------ processes


class Stale:
    """A task whose pseudo-label folders look finished: nothing left to do (a view of the disk that must not count)."""

    def __init__(self, task):
        self.task = task

    def __getattr__(self, name: str):
        return getattr(self.task, name)

    def pseudo_labels(self, folder: Path):
        return Done(self.task.pseudo_labels(folder))


class Done:
    """A pseudo-label folder seen as finished."""

    def __init__(self, labels):
        self.labels = labels

    def __getattr__(self, name: str):
        return getattr(self.labels, name)

    def todo(self, ids: list[str]) -> list[str]:
        return []


def run_all(root: Path, out: Path, d: Dist, stale: bool = False) -> dict:
    """Pseudo-labels of the train split and val figures of both tasks, as the pipeline makes them, into out/<task>.
    stale: this rank sees no pseudo-label left to do (a view of the disk that must not count)."""
    ds, val = open_dataset("voc", root, "train"), open_dataset("voc", root, "val")
    names, res = ds.class_names, {}
    tasks = [(SemanticTask(names), semantic_model(names)), (InstanceTask(names, steps=2), instance_model(names))]
    for task, model in tasks:
        model = model.to(d.device)
        labeller = Stale(task) if stale else task
        predict_pool(model, labeller, ds, list(ds.ids), out / task.name, PSEUDO, size=SIZE, mean=MEAN, std=STD, d=d)
        res[task.name] = task.pseudo_labels(out / task.name).finalize(ds, list(ds.ids), PSEUDO, d)
        ev = task.evaluator()
        for sample, pred in predict(model, val, list(val.ids), task, size=SIZE, mean=MEAN, std=STD, d=d, batch_size=3):
            task.score(ev, sample, pred)
        res[f"{task.name} val"] = ev.evaluate(gather=d.world > 1)
    return json.loads(json.dumps(res))  # NaN APs compare equal as text


def rank_main(root: str, out: str, rank: int, world: int, backend: str) -> None:
    """One process of a `world`-process group (a subprocess of the tests); rank 0 writes results.json."""
    dist.init_process_group(backend, init_method=f"file://{out}/store", rank=rank, world_size=world)
    device = torch.device("cuda", rank) if backend == "nccl" else torch.device("cpu")
    if backend == "nccl":
        torch.cuda.set_device(device)
    torch.set_num_threads(1)
    res = run_all(Path(root), Path(out), Dist(rank, world, device), stale=rank == 1)
    if rank == 0:
        (Path(out) / "results.json").write_text(json.dumps(res))
    dist.destroy_process_group()


def spawn(root: Path, out: Path, world: int, backend: str) -> dict:
    """Run rank_main in `world` processes; their results."""
    out.mkdir()
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_inference_path as t; "
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code + f"t.rank_main({str(root)!r}, {str(out)!r}, {r}, {world}, {backend!r})"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for r in range(world)
    ]
    logs = [p.communicate(timeout=240)[0].decode()[-3000:] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)
    return json.loads((out / "results.json").read_text())


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_two_processes_write_and_score_what_one_does(tiny_data, tmp_path):
    """Rank 1 sees nothing left to do: only rank 0's to-do list may count, or its batches would be missing."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank: another thread count may change a forward pass's last bits
    try:
        one = run_all(tiny_data, tmp_path / "one", SINGLE)
    finally:
        torch.set_num_threads(threads)
    two = spawn(tiny_data, tmp_path / "two", 2, "gloo")
    assert two == one  # pseudo-label summaries (thresholds, mIoU, AP, ...) and val figures alike
    for task in ("semantic", "instance"):
        want, got = files(tmp_path / "one" / task), files(tmp_path / "two" / task)
        assert got.keys() == want.keys()  # every image written, no part file left behind
        assert [k for k in want if got[k] != want[k]] == []
    assert len(want) == 24 + 1  # pred/ files and pseudo_labels.json
    assert one["semantic"]["scored_images"] == 24 and 0 < one["semantic"]["kept_fraction"] < 1
    assert 0 < one["instance"]["kept_instances"] < one["instance"]["instances"]


@CUDA
def test_metrics_reduce_under_nccl(tmp_path):
    """NCCL reduces CUDA tensors only: the confusion matrix (kept on the CPU) must go through the GPU."""
    code = (
        "import torch, torch.distributed as dist, numpy as np\n"
        "from budgetseg.semantic.metrics import SemanticEvaluator\n"
        "from budgetseg.instance.metrics import InstanceEvaluator\n"
        "torch.cuda.set_device(0)\n"
        f"dist.init_process_group('nccl', init_method='file://{tmp_path}/store', rank=0, world_size=1)\n"
        "ev = SemanticEvaluator(['bg', 'a'])\n"
        "ev.process(np.array([[0, 1]]), np.array([[0, 1]]))\n"
        "assert ev.evaluate()['miou'] == 1.0\n"
        "m = np.zeros((1, 4, 4), bool); m[0, :2] = True\n"
        "iv = InstanceEvaluator(['bg', 'a'])\n"
        "iv.process('x', m, np.array([1]), m, np.array([1]), np.array([0.9]))\n"
        "assert abs(iv.evaluate()['ap50'] - 1.0) < 1e-9\n"  # COCOeval's interpolation: 0.9999999999999999
        "dist.destroy_process_group()\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]


@CUDA
@pytest.mark.parametrize("size", [SIZE, 64])
@pytest.mark.parametrize("name", ["semantic", "instance"])
def test_predict_on_cuda_decodes_there_and_agrees_with_the_cpu(tiny_data, monkeypatch, name, size):
    """On CUDA predict yields a batch once the device has finished it (the copies to the CPU are asynchronous and
    the next batch is already queued): what the caller reads at once agrees with the CPU's predictions. At 32 px
    the 64 px images are resized back (decoded one by one), at 64 px not (decoded together, decode_batch)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # an untrained net's classes are near ties
    val = open_dataset("voc", tiny_data, "val")
    names = val.class_names
    if name == "semantic":
        model, task = semantic_model(names), SemanticTask(names)
    else:
        model, task = instance_model(names), InstanceTask(names, steps=2)

    def read_now(p):  # copies made the moment the prediction is handed on
        if name == "semantic":
            assert isinstance(p.label, np.ndarray) and p.label.dtype == np.uint8 == p.confidence.dtype
            return p.label.copy(), p.confidence.copy()
        return [(m.copy(), c, s) for m, c, s in p]

    kw = dict(size=size, mean=MEAN, std=STD, batch_size=3)
    cpu = [read_now(p) for _, p in predict(model, val, list(val.ids), task, **kw)]
    cuda = Dist(device=torch.device("cuda"))
    gpu = [read_now(p) for _, p in predict(model, val, list(val.ids), task, d=cuda, workers=2, **kw)]
    assert len(cpu) == len(gpu) == len(val.ids)
    if name == "semantic":
        for a, b in zip(cpu, gpu, strict=True):
            assert (a[0] == b[0]).mean() > 0.98 and np.abs(a[1].astype(int) - b[1]).max() <= 1
        return
    assert sum(map(len, gpu)) > 0
    # instances: the same classes and masks, but for at most one image (an untrained net's near ties)
    same = [
        [c for _, c, _ in a] == [c for _, c, _ in b]
        and all((ma == mb).mean() > 0.98 for (ma, _, _), (mb, _, _) in zip(a, b, strict=True))
        for a, b in zip(cpu, gpu, strict=True)
    ]
    assert sum(same) >= len(same) - 1


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_two_gpus_write_and_score_what_one_process_does(tiny_data, tmp_path):
    """NCCL: the to-do list, the confidence histograms, the parts and the evaluators travel between GPUs. The
    figures of one GPU process and two may differ in their last bits (other kernels), so they are compared loosely."""
    one = run_all(tiny_data, tmp_path / "one", Dist(device=torch.device("cuda", 0)))
    two = spawn(tiny_data, tmp_path / "two", 2, "nccl")
    assert two["semantic"]["images"] == one["semantic"]["images"] == 24
    assert two["semantic"]["miou"] == pytest.approx(one["semantic"]["miou"], abs=0.02)
    assert two["semantic val"]["miou"] == pytest.approx(one["semantic val"]["miou"], abs=0.02)
    for task in ("semantic", "instance"):
        assert files(tmp_path / "two" / task).keys() == files(tmp_path / "one" / task).keys()
