#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Golden logits of Hugging Face transformers' Qwen2ForCausalLM on a tiny random Qwen2, for
tests/core/model/qwen2_test.cpp: the weights under MiniCPM-o's `llm.` prefix, token ids, and the
float32 CPU logits and final hidden states.

Run where transformers is installed (the GPU host):
  python3 make_qwen2_goldens.py --out tests/data/model/qwen2_tiny.safetensors
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
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, rope_theta=1000000.0, rms_norm_eps=1e-6,
                  max_position_embeddings=512, tie_word_embeddings=False, hidden_act="silu")
    torch.manual_seed(20261128)
    model = Qwen2ForCausalLM(Qwen2Config(**config, attn_implementation="eager")).float().eval()
    with torch.no_grad():
        # Random norms and biases too, so that every parameter matters.
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn_like(p))
    ids = torch.randint(0, config["vocab_size"], (2, 12))
    position_ids = torch.arange(12).unsqueeze(0).expand(2, -1).contiguous()
    with torch.no_grad():
        out = model(input_ids=ids, position_ids=position_ids, output_hidden_states=True)
    tensors = {f"llm.{k}": v.contiguous() for k, v in model.state_dict().items()}
    tensors["golden.input_ids"] = ids
    tensors["golden.position_ids"] = position_ids
    tensors["golden.logits"] = out.logits.contiguous()
    tensors["golden.hidden"] = out.hidden_states[-1].contiguous()
    save_file(tensors, args.out, metadata={"config": json.dumps(config), "transformers": transformers.__version__,
                                           "torch": torch.__version__})
    print(f"wrote {args.out}: transformers {transformers.__version__}, torch {torch.__version__}, "
          f"logits {tuple(out.logits.shape)}")


if __name__ == "__main__":
    main()
