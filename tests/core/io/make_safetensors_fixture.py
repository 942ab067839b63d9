#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""A small sharded checkpoint written by the reference `safetensors` library (and torch), for
tests/core/io/safetensors_test.cpp to read: two shards plus model.safetensors.index.json, every
dtype cpmd reads, values the C++ test recomputes exactly.

Run where `safetensors` and `torch` are installed (the GPU host):
  python3 make_safetensors_fixture.py --out tests/data/safetensors
"""
import argparse
import json
import os

import torch
from safetensors.torch import save_file


def tensors():
    base = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4) / 8 - 1  # exact in f16 and bf16
    shard1 = {
        "f32": base,
        "f16": base.half(),
        "bf16": base.bfloat16(),
        "i64": torch.arange(5, dtype=torch.int64) * -3,
        "i32": torch.arange(6, dtype=torch.int32).reshape(2, 3),
        "u8": (torch.arange(7) * 30).to(torch.uint8),
        "bool": torch.tensor([True, False, True]),
    }
    shard2 = {
        "scalar": torch.tensor(3.25),
        "empty": torch.zeros(0, 4),
        "layer.weight": base.reshape(6, 4).t().contiguous(),
    }
    return shard1, shard2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    shards = tensors()
    weight_map = {}
    total = 0
    for i, shard in enumerate(shards, start=1):
        name = f"reference-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, os.path.join(args.out, name), metadata={"format": "pt"})
        for key, t in shard.items():
            weight_map[key] = name
            total += t.numel() * t.element_size()
    with open(os.path.join(args.out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, f, indent=2)
    import safetensors
    print(f"wrote {len(weight_map)} tensors in {len(shards)} shards with safetensors {safetensors.__version__}, torch {torch.__version__}")


if __name__ == "__main__":
    main()
