#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# On the GPU host: build the benchmarks against the CUDA LibTorch, write the `full` random
# checkpoint (MiniCPM-o-2.6's real shapes, bf16) and time one LoRA training step of the recipe with
# cpmd's trainer (tests/bench/train_bench.cpp) and with the Transformers + PEFT baseline
# (../shared/bench/train_step.py) in the same run; then cpmd's generation numbers
# (tests/bench/generate_bench.cpp) if time is left. Results and the log in $OUT.
#   usage: tests/gpu/training_bench.sh GPU_DIR   (debs/, env.sh, tokenizer.json and bench/*.py inside)
set -uo pipefail
gpu=$(realpath "${1:?usage: training_bench.sh GPU_DIR}")
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
targets="cpm-tool train_bench generate_bench"
configure && cmake --build build-gpu -j 16 --target $targets > "$out/build.log" 2>&1
if [ $? -ne 0 ]; then
  echo "build with the Kineto profiler failed (see build.log); building without GPU kernel times"
  configure -DCPM_BENCH_KINETO=OFF && cmake --build build-gpu -j 16 --target $targets > "$out/build2.log" 2>&1 || exit 1
fi
echo "build: $((SECONDS - start)) s"
rm -rf /tmp/cpm-full
/usr/bin/time -f "mkmodel: %e s" build-gpu/bin/cpm-tool mkmodel --out /tmp/cpm-full --preset full \
  --tokenizer "$gpu/tokenizer.json" || exit 1
echo "== cpmd training step (tests/bench/train_bench.cpp)"
build-gpu/bench/train_bench --model /tmp/cpm-full | tee "$out/train_cpmd.jsonl"
echo "== baseline: ../shared/bench/train_step.py --no-extras"
(cd "$gpu/bench" && PYTHONUNBUFFERED=1 python3 train_step.py --no-extras --out "$out/train_baseline.json") \
  2>&1 | tail -25
echo "elapsed: $((SECONDS - start)) s"
if [ $((SECONDS - start)) -lt 420 ]; then
  echo "== cpmd generation (tests/bench/generate_bench.cpp)"
  build-gpu/bench/generate_bench --model /tmp/cpm-full --repeats 3 | tee "$out/generate_cpmd.jsonl"
fi
echo "total: $((SECONDS - start)) s"
