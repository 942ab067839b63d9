#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Golden outputs of a tiny MiniCPM-o composed from independent parts: transformers'
Idefics2VisionTransformer (vpm) and Qwen2ForCausalLM (llm), and the resampler written from the
spec on torch.nn.MultiheadAttention, glued as MiniCPMO.get_vllm_embedding does (vision in
chunks of 16, resampler, scatter over image_bound). For tests/core/model/minicpmo_test.cpp.

Run where transformers is installed (the GPU host):
  python3 make_minicpmo_goldens.py --out tests/data/model/minicpmo_tiny.safetensors
"""
import argparse
import json
import math

import numpy as np
import torch
from safetensors.torch import save_file


def sincos_2d(embed_dim, h, w):
    # The reference's get_2d_sincos_pos_embed: meshgrid(grid_w, grid_h), first half from grid[0] (columns).
    def one_d(dim, pos):
        omega = np.arange(dim // 2, dtype=np.float32) / (dim / 2.0)
        omega = 1.0 / 10000 ** omega
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)
    grid_h = np.arange(h, dtype=np.float32)
    grid_w = np.arange(w, dtype=np.float32)
    grid = np.meshgrid(grid_w, grid_h)
    emb = np.concatenate([one_d(embed_dim // 2, grid[0]), one_d(embed_dim // 2, grid[1])], axis=1)
    return torch.from_numpy(emb).float()  # [h*w, D]


class Resampler(torch.nn.Module):
    def __init__(self, q, d, kv, heads):
        super().__init__()
        self.query = torch.nn.Parameter(torch.randn(q, d) * 0.02)
        self.kv_proj = torch.nn.Linear(kv, d, bias=False)
        self.attn = torch.nn.MultiheadAttention(d, heads)
        self.ln_q = torch.nn.LayerNorm(d, eps=1e-6)
        self.ln_kv = torch.nn.LayerNorm(d, eps=1e-6)
        self.ln_post = torch.nn.LayerNorm(d, eps=1e-6)
        self.proj = torch.nn.Parameter(torch.randn(d, d) * d ** -0.5)
        self.d = d

    def forward(self, x, tgt_sizes):
        n, L, _ = x.shape
        pos = torch.zeros(n, L, self.d)
        mask = torch.ones(n, L, dtype=torch.bool)
        for i, (h, w) in enumerate(tgt_sizes):
            pos[i, : h * w] = sincos_2d(self.d, h, w)
            mask[i, : h * w] = False
        x = self.ln_kv(self.kv_proj(x)).permute(1, 0, 2)
        q = self.ln_q(self.query)
        out = self.attn(q.unsqueeze(1).repeat(1, n, 1), x + pos.permute(1, 0, 2), x, key_padding_mask=mask)[0]
        return self.ln_post(out.permute(1, 0, 2)) @ self.proj


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    import transformers
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from transformers.models.idefics2.configuration_idefics2 import Idefics2VisionConfig
    from transformers.models.idefics2.modeling_idefics2 import Idefics2VisionTransformer

    torch.manual_seed(20261128)
    llm_cfg = dict(vocab_size=256, hidden_size=128, intermediate_size=128, num_hidden_layers=2,
                   num_attention_heads=2, num_key_value_heads=1, rope_theta=1000000.0, rms_norm_eps=1e-6,
                   max_position_embeddings=2048, tie_word_embeddings=False, hidden_act="silu")
    vis_cfg = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                   image_size=980, patch_size=14, layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh")
    llm = Qwen2ForCausalLM(Qwen2Config(**llm_cfg, attn_implementation="eager")).float().eval()
    vc = Idefics2VisionConfig(**vis_cfg)
    vc._attn_implementation = "eager"
    vpm = Idefics2VisionTransformer(vc).float().eval()
    resampler = Resampler(64, 128, 32, 1).float().eval()
    with torch.no_grad():
        for module in (llm, vpm, resampler):
            for name, p in module.named_parameters():
                if name.endswith("bias"):
                    p.copy_(0.05 * torch.randn_like(p))
                elif "norm" in name or name.startswith("ln_"):
                    p.copy_(1 + 0.1 * torch.randn_like(p))
    # Two images of a prompt: a source (5 x 8 patches) and one slice (4 x 4), strips as the reference's.
    sizes = [(5, 8), (4, 4)]
    images = [torch.rand(3, h * 14, w * 14) * 2 - 1 for h, w in sizes]
    tensors = {}
    with torch.no_grad():
        vision = []
        for img, (h, w) in zip(images, sizes):
            mask = torch.ones(1, h, w, dtype=torch.bool)
            vision.append(vpm(pixel_values=img.unsqueeze(0), patch_attention_mask=mask).last_hidden_state[0])
        lmax = max(v.shape[0] for v in vision)
        padded = torch.zeros(len(vision), lmax, 32)
        for i, v in enumerate(vision):
            padded[i, : v.shape[0]] = v
        features = resampler(padded, sizes)  # [2, 64, 128]
        # A prompt with the two 64-token spans; ids outside them are ordinary tokens.
        ids = torch.randint(1, 256, (150,))
        bound = [(10, 74), (80, 144)]
        embeds = llm.get_input_embeddings()(ids.unsqueeze(0)).clone()
        for k, (s, e) in enumerate(bound):
            embeds[0, s:e] = features[k]
        out = llm(inputs_embeds=embeds, position_ids=torch.arange(150).unsqueeze(0))
    for k, v in llm.state_dict().items():
        tensors[f"llm.{k}"] = v.contiguous()
    for k, v in vpm.state_dict().items():
        tensors[f"vpm.{k}"] = v.contiguous()
    for k, v in resampler.state_dict().items():
        tensors[f"resampler.{k}"] = v.contiguous()
    for i, img in enumerate(images):
        tensors[f"golden.image.{i}"] = img.contiguous()
        tensors[f"golden.vision.{i}"] = vision[i].contiguous()
    tensors["golden.resampler"] = features.contiguous()
    tensors["golden.input_ids"] = ids
    tensors["golden.logits"] = out.logits[0].contiguous()
    meta = {"llm": llm_cfg, "vision": vis_cfg, "sizes": sizes, "image_bound": bound}
    save_file(tensors, args.out, metadata={"config": json.dumps(meta), "transformers": transformers.__version__})
    print(f"wrote {args.out}: logits {tuple(out.logits.shape)}, transformers {transformers.__version__}")


if __name__ == "__main__":
    main()
