#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Golden outputs of Hugging Face transformers' logits processors in the order generate() applies
them for MiniCPM-o's sampling defaults (repetition penalty over the generated tokens, then
temperature, top-k, top-p), for tests/core/serve/sampling_test.cpp.

Run where transformers is installed (the GPU host):
  python3 make_sampling_goldens.py --out tests/data/model/sampling_goldens.safetensors
"""
import argparse
import json

import torch
from safetensors.torch import save_file


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    import transformers
    from transformers.generation.logits_process import (LogitsProcessorList, RepetitionPenaltyLogitsProcessor,
                                                        TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)
    torch.manual_seed(20261128)
    cases = [
        dict(temperature=0.7, top_k=100, top_p=0.8, repetition_penalty=1.05),   # chat() sampling defaults
        dict(temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.2),      # beam defaults' penalty only
        dict(temperature=0.3, top_k=5, top_p=1.0, repetition_penalty=1.0),
        dict(temperature=1.5, top_k=0, top_p=0.5, repetition_penalty=2.0),
        dict(temperature=0.7, top_k=1, top_p=0.8, repetition_penalty=1.05),
    ]
    tensors = {}
    for i, c in enumerate(cases):
        scores = torch.randn(1, 512) * 3
        generated = torch.randint(0, 512, (1, 12))
        generated[0, 5] = generated[0, 2]  # a repeated token
        procs = LogitsProcessorList()
        if c["repetition_penalty"] != 1.0:
            procs.append(RepetitionPenaltyLogitsProcessor(c["repetition_penalty"]))
        if c["temperature"] != 1.0:
            procs.append(TemperatureLogitsWarper(c["temperature"]))
        if c["top_k"] > 0:
            procs.append(TopKLogitsWarper(c["top_k"]))
        if c["top_p"] < 1.0:
            procs.append(TopPLogitsWarper(c["top_p"]))
        out = procs(generated, scores.clone())
        tensors[f"case.{i}.scores"] = scores[0].contiguous()
        tensors[f"case.{i}.generated"] = generated[0].contiguous()
        tensors[f"case.{i}.processed"] = out[0].contiguous()
    save_file(tensors, args.out, metadata={"cases": json.dumps(cases), "transformers": transformers.__version__})
    print(f"wrote {len(cases)} cases to {args.out} (transformers {transformers.__version__})")


if __name__ == "__main__":
    main()
