#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Fills the model volume with MiniCPM-o-2.6 once: the Kubernetes init container and the compose
# service `model-fetch` run this (image target `model-fetch` of docker/Dockerfile).
#
# Environment:
#   CPM_MODEL_DIR       where the checkpoint goes (default /models/MiniCPM-o-2_6)
#   CPM_MODEL_SOURCE    huggingface (default) or modelscope
#   CPM_MODEL_REPO      default openbmb/MiniCPM-o-2_6 (Hugging Face), OpenBMB/MiniCPM-o-2_6 (ModelScope)
#   CPM_MODEL_REVISION  a branch, tag or commit to pin (default: the repository's main revision)
#   HF_TOKEN / MODELSCOPE_API_TOKEN   optional, read by the CLIs themselves
#
# A directory that already holds a complete checkpoint is left alone, without touching the
# network: config.json, tokenizer.json, tokenizer_config.json, preprocessor_config.json, and every
# shard that model.safetensors.index.json names, each shard as long as its own header says. Else
# the official CLI downloads into it (`hf download`, the Hugging Face CLI that replaced
# `huggingface-cli`, or `modelscope download`); both skip files already complete and resume
# partial ones. The result is checked the same way; exit 1 names what is still missing.
set -euo pipefail

dir=${CPM_MODEL_DIR:-/models/MiniCPM-o-2_6}
source=${CPM_MODEL_SOURCE:-huggingface}
revision=${CPM_MODEL_REVISION:-}
case $source in
  huggingface) repo=${CPM_MODEL_REPO:-openbmb/MiniCPM-o-2_6} ;;
  modelscope) repo=${CPM_MODEL_REPO:-OpenBMB/MiniCPM-o-2_6} ;;
  *) echo "fetch-model: CPM_MODEL_SOURCE must be huggingface or modelscope, not '$source'" >&2; exit 2 ;;
esac

# Prints nothing and succeeds for a complete checkpoint; else prints one line per problem.
check() {
  python3 - "$1" <<'PY'
import json, os, struct, sys

d = sys.argv[1]
problems = []
for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"):
    if not os.path.isfile(os.path.join(d, name)):
        problems.append(f"{name} is missing")

def check_shard(name):
    path = os.path.join(d, name)
    if not os.path.isfile(path):
        problems.append(f"{name} is missing")
        return
    size = os.path.getsize(path)
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    except Exception as e:  # short file, bad header
        problems.append(f"{name}: unreadable safetensors header ({e})")
        return
    if size != 8 + n + end:
        problems.append(f"{name} is truncated: {size} bytes, its header needs {8 + n + end}")

index = os.path.join(d, "model.safetensors.index.json")
if os.path.isfile(index):
    try:
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
    except Exception as e:
        problems.append(f"model.safetensors.index.json: unreadable ({e})")
        shards = []
    for shard in shards:
        check_shard(shard)
elif os.path.isfile(os.path.join(d, "model.safetensors")):
    check_shard("model.safetensors")
else:
    problems.append("neither model.safetensors.index.json nor model.safetensors is there")
print("\n".join(problems))
sys.exit(1 if problems else 0)
PY
}

if [ -d "$dir" ] && check "$dir" >/dev/null; then
  echo "fetch-model: $dir holds a complete checkpoint; nothing to download"
  exit 0
fi

mkdir -p "$dir"
echo "fetch-model: downloading $repo${revision:+ at $revision} from $source into $dir"
case $source in
  huggingface) hf download "$repo" --local-dir "$dir" ${revision:+--revision "$revision"} ;;
  modelscope) modelscope download --model "$repo" --local_dir "$dir" ${revision:+--revision "$revision"} ;;
esac

if ! problems=$(check "$dir"); then
  echo "fetch-model: $dir is still incomplete after the download:" >&2
  sed 's/^/  /' <<<"$problems" >&2
  exit 1
fi
echo "fetch-model: $dir complete"
