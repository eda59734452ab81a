#!/usr/bin/env bash
# The GPU benchmarks in one go (a CUDA machine with vlprompt importable); outputs go to $OUT.
#   OUT=bench_out STEP_TIMEOUT=150 bash benchmarks/gpu_suite.sh [learner ...]
# STEP_TIMEOUT (seconds, default none) bounds each benchmark, so that one slow step cannot eat a lease.
set -uo pipefail
OUT=${OUT:-bench_out}
mkdir -p "$OUT"
learners=("${@:-coop cocoop maple promptsrc clip_lora tip_adapter tcp dept_coop dept_maple promptkd}")
t=${STEP_TIMEOUT:-0}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"
for dtype in fp32 bf16; do
  timeout "$t" python3 benchmarks/bench_backbone.py --device cuda --dtype $dtype 2>&1 | tee "$OUT/bench_backbone_cuda_$dtype.txt"
done
# shellcheck disable=SC2068
timeout "$t" python3 benchmarks/bench_train_step.py --device cuda --learners ${learners[@]} --classes 50 1000 --batch-size 8 \
  2>&1 | tee "$OUT/bench_train_step_cuda.txt"
# TPT and RLCF-prompt per test sample (64 views, ViT-B/16 student, ViT-L/14 teacher); OFFICIAL_TTA=/path/to/
# bench_official_tta.py adds the official implementations in the same run
timeout "$t" python3 benchmarks/bench_tta.py --device cuda --classes 200 1000 --views 64 \
  ${OFFICIAL_TTA:+--official-cmd "python3 $OFFICIAL_TTA {method} {classes} --views {views} --samples {samples} --warmup {warmup} --device {device} --names vlprompt"} \
  2>&1 | tee "$OUT/bench_tta_cuda.txt"
# active-learning selection on 100k x 512 synthetic features (CPU: faiss index + matrix-vector steps vs torch.cdist)
timeout "$t" python3 benchmarks/bench_active_select.py --picks 1000 --repeats 1 2>&1 | tee "$OUT/bench_active_select.txt"
# GRAM: meta-training tasks/s (first and second order), the gate regulator's per-step overhead, and faiss vs torch
# k-means of 1M x 512 synthetic features (faiss-gpu when installed)
timeout "$t" python3 benchmarks/bench_gram.py --device cuda --backbone ViT-B-16 --learners coop maple ivlp --pairs 2000 \
  --meta-steps 10 --train-steps 30 --batch-size 32 --points 1000000 --k 1024 2>&1 | tee "$OUT/bench_gram_cuda.txt"
