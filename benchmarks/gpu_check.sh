#!/usr/bin/env bash
# Issue 13's GPU check, in one go on a CUDA machine (about 5 minutes on one H200):
#   1. tests/rl/test_real_models.py's trainer tests with RFTKIT_TEST_DEVICE=cuda (mixed precision, micro-batches,
#      gradient checkpointing, LoRA: the same assertions as on CPU);
#   2. benchmarks/memory.py on CUDA: peak memory and samples/s of full-fp32, full-mixed, lora, lora-ckpt for
#      Qwen2.5-0.5B's and 1.5B's layouts (random init, bf16, nothing downloaded).
# Logs go to $OUT (or ./gpu_check_out). Pure-Python dependencies the machine lacks can travel as wheels in .whl/.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
if [ -d .whl ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
$PY -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)" | tee -a "$OUT/gpu.txt"
# -o filterwarnings=: another torch/transformers than constraints.txt pins may warn where ours does not; tests still assert
RFTKIT_TEST_DEVICE=cuda timeout 150 $PY -m pytest -q -o filterwarnings= -p no:cacheprovider tests/rl/test_real_models.py \
    -k "not rftkit_train and not out_of_memory and not sections and not bad_values" 2>&1 | tail -25 | tee "$OUT/tests.txt"
timeout 110 $PY benchmarks/memory.py --device cuda --size 0.5b --new-tokens 128 --steps 2 2>&1 | tee "$OUT/memory_0.5b.txt"
timeout 100 $PY benchmarks/memory.py --device cuda --size 1.5b --new-tokens 128 --steps 2 2>&1 | tee "$OUT/memory_1.5b.txt"
