#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Greedy generation golden: Hugging Face transformers' generate() on the tiny Qwen2 of
tests/data/model/qwen2_tiny.safetensors, started from inputs_embeds as MiniCPM-o's chat() starts it,
for tests/core/serve/generation_test.cpp.

Run where transformers is installed (the GPU host):
  python3 make_generation_goldens.py --weights tests/data/model/qwen2_tiny.safetensors \
      --out tests/data/model/qwen2_tiny_greedy.json
"""
import argparse
import json

import torch
from safetensors import safe_open


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    import transformers
    from transformers import Qwen2Config, Qwen2ForCausalLM

    with safe_open(args.weights, "pt") as f:
        config = json.loads(f.metadata()["config"])
        state = {k[len("llm."):]: f.get_tensor(k) for k in f.keys() if k.startswith("llm.")}
        ids = f.get_tensor("golden.input_ids")
    model = Qwen2ForCausalLM(Qwen2Config(**config, attn_implementation="eager")).float().eval()
    model.load_state_dict(state, strict=True)
    cases = []
    for row in range(ids.shape[0]):
        prompt = ids[row:row + 1]
        with torch.no_grad():
            embeds = model.get_input_embeddings()(prompt)
            out = model.generate(inputs_embeds=embeds, attention_mask=torch.ones_like(prompt), do_sample=False,
                                 num_beams=1, max_new_tokens=16, min_new_tokens=16, eos_token_id=None,
                                 pad_token_id=0)
        # From inputs_embeds, generate() returns the new tokens only.
        cases.append({"row": row, "prompt": prompt[0].tolist(), "greedy": out[0].tolist()})
    with open(args.out, "w") as f:
        json.dump({"transformers": transformers.__version__, "torch": torch.__version__, "cases": cases}, f)
    print(f"wrote {args.out}: {[len(c['greedy']) for c in cases]} tokens (transformers {transformers.__version__})")


if __name__ == "__main__":
    main()
