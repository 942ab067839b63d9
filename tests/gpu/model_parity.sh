#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# On the GPU host: build the gpu-labelled tests against the CUDA LibTorch and run them (the model in
# bfloat16 on CUDA against the float32 goldens of transformers). Log in $OUT.
#   usage: tests/gpu/model_parity.sh DEBS_DIR ENV_SH
set -uo pipefail
out=${OUT:-/tmp/cpm-gpu-out}
mkdir -p "$out"
exec > >(tee "$out/model_parity.log") 2>&1
# shellcheck source=/dev/null
source "${2:?usage: model_parity.sh DEBS_DIR ENV_SH}" "${1:?}"
date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DCPM_WITH_OPENCV=OFF -DCPM_WERROR=ON \
  -DCPM_GRPC_PROTO_DIR=/opt/cpm-deps/usr/share/grpc-proto >/dev/null || exit 1
cmake --build build-gpu -j 16 --target core_gpu_test || exit 1
ctest --test-dir build-gpu -L gpu -V 2>&1 | grep -E '\[ gpu|Passed|Failed|Skipped|tests passed|Failure|Expected|Which'
