#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# On the GPU host (Ubuntu 24.04, CUDA, Python torch 2.x): build cpmd against the CUDA LibTorch,
# run the core and server unit tests, start cpmd and query it with cpmctl. Results go to $OUT.
#   usage: tests/gpu/foundation.sh DEBS_DIR ENV_SH      (see ../shared/gpu/README.md)
set -uo pipefail
debs=${1:?usage: foundation.sh DEBS_DIR ENV_SH}
env_sh=${2:?usage: foundation.sh DEBS_DIR ENV_SH}
out=${OUT:-/tmp/cpm-gpu-out}
mkdir -p "$out"
exec > >(tee "$out/foundation.log") 2>&1

# shellcheck source=/dev/null
source "$env_sh" "$debs"
echo "== host"; date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'

echo "== configure + build"
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DCPM_WITH_OPENCV=OFF -DCPM_WERROR=ON \
  -DCPM_GRPC_PROTO_DIR=/opt/cpm-deps/usr/share/grpc-proto || exit 1
time cmake --build build-gpu -j 16 || exit 1

echo "== unit tests on the GPU host (those that need no Pillow oracle or npm tokenizer there)"
ctest --test-dir build-gpu -L 'core|server' --output-on-failure -j 8 \
  -R '^(Logging|Guard|Device|BuildInfo|Safetensors|SafetensorsCheckpoint|SafetensorsReference|ModelConfig|PreprocessorConfig|GenerationAndTokenizerConfig|CheckpointConfigs|BpeTokenizer|Config|Metrics|JobStore|StatusConversion|GrpcCodeName|ProcessMetrics)\.'
echo "ctest rc=$?"

echo "== cpmd + cpmctl"
data=$(mktemp -d)
build-gpu/bin/cpmd --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --data-dir "$data" >"$out/cpmd.log" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q 'cpmd ready' "$out/cpmd.log" && break; sleep 0.1; done
cat "$out/cpmd.log"
port=$(sed -n 's/.*msg="grpc listening".* port=\([0-9]*\).*/\1/p' "$out/cpmd.log")
build-gpu/bin/cpmctl --server "127.0.0.1:$port" health; echo "health rc=$?"
build-gpu/bin/cpmctl --server "127.0.0.1:$port" info; echo "info rc=$?"
build-gpu/bin/cpmctl --server "127.0.0.1:$port" info --json >"$out/info.json"; echo "info --json rc=$?"
kill -TERM "$pid"; wait "$pid"; echo "cpmd exit code on SIGTERM: $?"
tail -2 "$out/cpmd.log"
