#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# On the GPU host: build against the CUDA LibTorch (warnings listed, not fatal: that host's g++ 13
# flags things Debian's g++ 12 does not) and run every gpu-labelled suite
# (model parity in bf16, the runtime engine on CUDA, which decodes through the static cache and
# CUDA graphs by default), the generation tests on the CPU there, and `cpm-tool generate --device
# cuda` on a tiny checkpoint, base and with a LoRA adapter. Log in $OUT.
#   usage: tests/gpu/serving_gpu.sh GPU_DIR   (debs/, env.sh and tokenizer.json inside)
set -uo pipefail
gpu=$(realpath "${1:?usage: serving_gpu.sh GPU_DIR}")
out=${OUT:-/tmp/cpm-gpu-out}
mkdir -p "$out"
exec > >(tee "$out/serving_gpu.log") 2>&1
# shellcheck source=/dev/null
source "$gpu/env.sh" "$gpu/debs"
date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
start=$SECONDS
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DCPM_WITH_OPENCV=OFF -DCPM_WERROR=OFF \
  -DCPM_GRPC_PROTO_DIR=/opt/cpm-deps/usr/share/grpc-proto >/dev/null 2>&1 || exit 1
cmake --build build-gpu -j 16 --target core_gpu_test core_runtime_gpu_test core_model_test cpm-tool \
  > "$out/build.log" 2>&1 || { grep -E "error|FAILED" -A3 "$out/build.log" | head -40; exit 1; }
echo "build: $((SECONDS - start)) s; warnings (g++ there is newer than Debian's):"
grep -E "warning:" "$out/build.log" | sed 's|.*/work/main/||' | sort -u | head -20
ctest --test-dir build-gpu -L gpu --output-on-failure 2>&1 | tail -15
build-gpu/tests/core_model_test --gtest_filter='Generate*:KvCache*:BeamSearch*' 2>&1 | tail -3
rm -rf /tmp/tiny && build-gpu/bin/cpm-tool mkmodel --out /tmp/tiny --preset tiny --tokenizer "$gpu/tokenizer.json" >/dev/null
for args in "" "--adapter tests/data/adapters/cpmd_written"; do
  echo "== cpm-tool generate --device cuda --dtype bf16 $args"
  build-gpu/bin/cpm-tool generate --model /tmp/tiny --image tests/data/images/formulas/0.png --device cuda \
    --dtype bf16 --max-new-tokens 16 $args 2>&1 | tail -2
done
echo "total: $((SECONDS - start)) s"
