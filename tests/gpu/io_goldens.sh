#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# On the GPU host (it has Hugging Face tokenizers, safetensors and torch): produce the model-I/O
# goldens with the reference libraries, check our tokenizer against them there, and time both
# tokenizers on the same corpus. Results go to $OUT.
#   usage: tests/gpu/io_goldens.sh GPU_DIR   (GPU_DIR holds debs/, env.sh, tokenizer.json, labels.csv)
set -uo pipefail
gpu=${1:?usage: io_goldens.sh GPU_DIR}
out=${OUT:-/tmp/cpm-gpu-out}
mkdir -p "$out/safetensors"
exec > >(tee "$out/io_goldens.log") 2>&1
# shellcheck source=/dev/null
source "$gpu/env.sh" "$gpu/debs"
echo "== host"; date -u; lscpu | grep -E 'Model name|^CPU\(s\)'
python3 -c 'import tokenizers, safetensors, torch; print("tokenizers", tokenizers.__version__, "safetensors", safetensors.__version__, "torch", torch.__version__)'

echo "== build cpm-tool and tokenizer_bench"
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DCPM_WITH_OPENCV=OFF \
  -DCPM_GRPC_PROTO_DIR=/opt/cpm-deps/usr/share/grpc-proto >/dev/null || exit 1
cmake --build build-gpu -j 16 --target cpm-tool tokenizer_bench || exit 1

echo "== goldens from the reference libraries"
python3 tests/core/io/make_tokenizer_goldens.py --tokenizer "$gpu/tokenizer.json" --labels "$gpu/labels.csv" \
  --out "$out/qwen_goldens.jsonl.gz" --bench
python3 tests/core/io/make_safetensors_fixture.py --out "$out/safetensors"

echo "== our tokenizer against the goldens"
python3 - "$out/qwen_goldens.jsonl.gz" "$gpu" <<'PY'
import gzip, json, subprocess, sys
recs = [json.loads(l) for l in gzip.open(sys.argv[1], "rt", encoding="utf-8")][1:]
inp = "".join(json.dumps(r["text"], ensure_ascii=False) + "\n" for r in recs)
res = subprocess.run(["build-gpu/bin/cpm-tool", "tokenize", "--model", sys.argv[2]], input=inp,
                     capture_output=True, text=True)
ours = [json.loads(l) for l in res.stdout.splitlines()]
bad = [(r["text"], r["ids"], o) for r, o in zip(recs, ours) if r["ids"] != o]
print(f"{len(recs)} strings, {len(ours)} encoded, {len(bad)} differ from tokenizers")
for t, want, got in bad[:10]:
    print("MISMATCH", json.dumps(t, ensure_ascii=False), want, got)
PY

echo "== throughput, same corpus, same machine"
build-gpu/bench/tokenizer_bench "$gpu" "$out/qwen_goldens.jsonl.gz"
