#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# On the GPU host: write the `full` random checkpoint (MiniCPM-o-2.6's real 8B shapes, bf16), load
# it onto the GPU and answer one formula image with greedy decoding. Log in $OUT.
#   usage: tests/gpu/full_model.sh GPU_DIR   (debs/, env.sh and tokenizer.json inside)
set -uo pipefail
gpu=${1:?usage: full_model.sh GPU_DIR}
out=${OUT:-/tmp/cpm-gpu-out}
mkdir -p "$out"
exec > >(tee "$out/full_model.log") 2>&1
# shellcheck source=/dev/null
source "$gpu/env.sh" "$gpu/debs"
date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DCPM_WITH_OPENCV=OFF \
  -DCPM_GRPC_PROTO_DIR=/opt/cpm-deps/usr/share/grpc-proto >/dev/null || exit 1
cmake --build build-gpu -j 16 --target cpm-tool | tail -1 || exit 1
rm -rf /tmp/cpm-full
/usr/bin/time -f "mkmodel: %e s, peak host RSS %M KiB" \
  build-gpu/bin/cpm-tool mkmodel --out /tmp/cpm-full --preset full --tokenizer "$gpu/tokenizer.json" || exit 1
du -sh /tmp/cpm-full; ls /tmp/cpm-full
/usr/bin/time -f "generate: %e s, peak host RSS %M KiB" \
  build-gpu/bin/cpm-tool generate --model /tmp/cpm-full --image tests/data/images/formulas/0.png \
    --text "Convert the formula to LaTeX." --device cuda --max-new-tokens 16
echo "generate rc=$?"
