#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# On the GPU host: build the benchmarks against the CUDA LibTorch, write the `full` random
# checkpoint and time generation with cpmd (tests/bench/generate_bench.cpp: eager and CUDA-graph
# decoding, base model and unmerged LoRA) next to the Transformers baselines
# (../shared/bench/generate.py, decode_compiled.py) in the same run. Results and the log in $OUT.
#   usage: tests/gpu/generation_bench.sh GPU_DIR   (debs/, env.sh, tokenizer.json and bench/*.py inside)
set -uo pipefail
gpu=$(realpath "${1:?usage: generation_bench.sh GPU_DIR}")
out=${OUT:-/tmp/cpm-gpu-out}
mkdir -p "$out"
exec > >(tee "$out/generation_bench.log") 2>&1
# shellcheck source=/dev/null
source "$gpu/env.sh" "$gpu/debs"
date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
start=$SECONDS
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DCPM_WITH_OPENCV=OFF -DCPM_BENCH_KINETO=OFF \
  -DCPM_GRPC_PROTO_DIR=/opt/cpm-deps/usr/share/grpc-proto >/dev/null 2>&1 || exit 1
cmake --build build-gpu -j 16 --target cpm-tool generate_bench > "$out/build.log" 2>&1 || { tail -30 "$out/build.log"; exit 1; }
echo "build: $((SECONDS - start)) s"
rm -rf /tmp/cpm-full
build-gpu/bin/cpm-tool mkmodel --out /tmp/cpm-full --preset full --tokenizer "$gpu/tokenizer.json" || exit 1
echo "== cpmd generation (tests/bench/generate_bench.cpp)"
build-gpu/bench/generate_bench --model /tmp/cpm-full | tee "$out/generate_cpmd.jsonl"
echo "== baseline: ../shared/bench/generate.py --no-profile"
(cd "$gpu/bench" && PYTHONUNBUFFERED=1 python3 generate.py --no-profile --out "$out/generate_baseline.json") 2>&1 | tail -12
echo "elapsed: $((SECONDS - start)) s"
echo "== tuned baseline: ../shared/bench/decode_compiled.py"
(cd "$gpu/bench" && PYTHONUNBUFFERED=1 timeout $((560 - (SECONDS - start))) python3 decode_compiled.py \
  --out "$out/decode_compiled.json") 2>&1 | tail -12
echo "total: $((SECONDS - start)) s"
