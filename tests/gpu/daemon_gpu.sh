#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# On the GPU host: the product end to end on one GPU. cpmd serves the full preset (the real 8B
# shapes, random weights, bf16); cpmctl uploads 32 real formulas and submits a fine-tuning job with
# the recipe's settings (LoRA r64 on q/k/v/o, vision tower and resampler in full, gradient
# checkpointing, AdamW, cosine); OCR requests from cpmctl are answered while it trains; cpmd is
# killed with SIGKILL mid-job and restarted, the job resumes from its checkpoint and succeeds with
# every step recorded once; then its adapter answers OCR. Logs and JSON in $OUT.
#   usage: tests/gpu/daemon_gpu.sh GPU_DIR   (debs/, env.sh and tokenizer.json inside)
set -uo pipefail
gpu=$(realpath "${1:?usage: daemon_gpu.sh GPU_DIR}")
out=${OUT:-/tmp/cpm-gpu-out}
mkdir -p "$out"
exec > >(tee "$out/daemon_gpu.log") 2>&1
# shellcheck source=/dev/null
source "$gpu/env.sh" "$gpu/debs"
echo "command: tests/gpu/daemon_gpu.sh $*"
date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
start=$SECONDS
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DCPM_WITH_OPENCV=OFF -DCPM_BENCH_KINETO=OFF \
  -DCPM_WERROR=OFF -DCPM_GRPC_PROTO_DIR=/opt/cpm-deps/usr/share/grpc-proto >/dev/null 2>&1 || exit 1
cmake --build build-gpu -j 16 --target cpmd cpmctl cpm-tool core_gpu_test > "$out/build.log" 2>&1 ||
  { grep -E "error|FAILED" -A3 "$out/build.log" | head -40; exit 1; }
echo "build: $((SECONDS - start)) s"
build-gpu/tests/core_gpu_test --gtest_filter='AdamWGpu*' 2>&1 | grep -E '^\[ +(OK|FAILED|PASSED)|Failure|Expected'
bin=build-gpu/bin
ctl() { "$bin/cpmctl" --server 127.0.0.1:50051 --timeout 600 "$@"; }
[ -f /tmp/full/config.json ] ||
  "$bin/cpm-tool" mkmodel --out /tmp/full --preset full --tokenizer "$gpu/tokenizer.json" >/dev/null || exit 1
echo "mkmodel full: $((SECONDS - start)) s"

var=/tmp/cpmd-var
rm -rf "$var"
launch() {
  "$bin/cpmd" --model /tmp/full --device cuda --data-dir "$var" --listen 127.0.0.1:50051 \
    --metrics-listen 127.0.0.1:9464 >> "$out/cpmd.log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do
    ctl health --service cpm.v1.Training >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  echo "cpmd did not become ready"; tail -20 "$out/cpmd.log"; exit 1
}
step_of() { ctl job "$1" --json | python3 -c 'import json,sys; print(json.load(sys.stdin).get("progress", {}).get("step", 0))'; }

launch
echo "cpmd ready (8B bf16 on the GPU): $((SECONDS - start)) s"
job=$(ctl train tests/data/train/fit32/labels.csv --name gpu-fit --max-steps 60 --lr 1e-4 --save-steps 20 \
  --logging-steps 5 --eval-size 4 --eval-steps 0 --eval-max-new-tokens 32 --json |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])') || exit 1
echo "job $job submitted"
# OCR while the job trains: 41 formula images, 8 at a time.
until [ "$(step_of "$job")" -ge 5 ]; do sleep 0.5; done
ctl ocr tests/data/images/formulas --concurrency 8 --max-new-tokens 32 --json > "$out/ocr_during_training.jsonl"
echo "OCR during training: $(wc -l < "$out/ocr_during_training.jsonl") answers, job at step $(step_of "$job")"
until [ "$(step_of "$job")" -ge 25 ]; do sleep 0.5; done
kill -9 "$pid"; wait "$pid" 2>/dev/null
echo "SIGKILL at step ~25: $((SECONDS - start)) s"
launch
ctl watch "$job" --from-step 0 --json > "$out/watch.jsonl"
ctl job "$job" --json > "$out/job.json"
python3 - "$out" <<'EOF'
import json, os, sys
out = sys.argv[1]
events = [json.loads(l) for l in open(os.path.join(out, "watch.jsonl")) if l.startswith("{")]
steps = [int(e["progress"]["step"]) for e in events if "progress" in e]
print("progress steps:", steps)
print("every step once:", steps == sorted(set(steps)))
for e in events:
    if "progress" in e and int(e["progress"]["step"]) in (5, 30, 60):
        p = e["progress"]
        print(f"step {p['step']}: loss {p['loss']:.4f}, {p['tokens_per_second']:.0f} tok/s, "
              f"peak {int(p['peak_memory_bytes']) / 2**30:.1f} GiB")
    if "state_change" in e:
        print("state:", e["state_change"])
job = json.load(open(os.path.join(out, "job.json")))
print("final:", job["state"], job["adapter_name"], job.get("last_eval"))
ocr = [json.loads(l) for l in open(os.path.join(out, "ocr_during_training.jsonl")) if l.startswith("{")]
print("OCR during training:", len(ocr), "answers")
EOF
ctl ocr tests/data/images/formulas/0.png --adapter gpu-fit --max-new-tokens 32 --json | head -c 600; echo
ctl metrics | head -40
kill "$pid"; wait "$pid"; echo "cpmd exit: $?"
echo "total: $((SECONDS - start)) s"
