#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Golden outputs of Hugging Face transformers' Idefics2VisionTransformer (the same SigLIP NaViT
as MiniCPM-o's vpm) on a tiny random tower, for tests/core/model/siglip_test.cpp.

The weights are written under MiniCPM-o's `vpm.` keys. Each image goes in as transformers takes it:
the plain [3, H, W] picture with a [H/14, W/14] patch mask (images of a batch padded spatially to
the largest); the golden keeps, per image, the outputs of its real patches in row-major order
[h*w, hidden], which is what the reference's strip layout gives for them.

Run where transformers is installed (the GPU host):
  python3 make_vision_goldens.py --out tests/data/model/siglip_tiny.safetensors
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
    from transformers.models.idefics2.configuration_idefics2 import Idefics2VisionConfig
    from transformers.models.idefics2.modeling_idefics2 import Idefics2VisionTransformer

    config = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  num_channels=3, image_size=980, patch_size=14, hidden_act="gelu_pytorch_tanh",
                  layer_norm_eps=1e-6, attention_dropout=0.0)
    torch.manual_seed(20261128)
    vc = Idefics2VisionConfig(**config)
    vc._attn_implementation = "eager"
    tower = Idefics2VisionTransformer(vc).float().eval()
    with torch.no_grad():
        for name, p in tower.named_parameters():
            if "layer_norm" in name or "layernorm" in name:
                p.copy_((1 if name.endswith("weight") else 0) + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn_like(p))
    # (h, w) in patches: unpadded alone, then a padded batch with bucket ties (35, 7, 14 divide 70).
    batches = [[(3, 5)], [(2, 7), (5, 3), (1, 1)], [(7, 35), (14, 2)]]
    tensors = {f"vpm.{k}": v.contiguous() for k, v in tower.state_dict().items()}
    for b, sizes in enumerate(batches):
        hmax = max(h for h, _ in sizes)
        wmax = max(w for _, w in sizes)
        pixels = torch.zeros(len(sizes), 3, hmax * 14, wmax * 14)
        mask = torch.zeros(len(sizes), hmax, wmax, dtype=torch.bool)
        for i, (h, w) in enumerate(sizes):
            img = torch.rand(3, h * 14, w * 14) * 2 - 1
            pixels[i, :, : h * 14, : w * 14] = img
            mask[i, :h, :w] = True
            tensors[f"golden.{b}.image.{i}"] = img.contiguous()
        with torch.no_grad():
            out = tower(pixel_values=pixels, patch_attention_mask=mask).last_hidden_state  # [B, hmax*wmax, D]
        for i, (h, w) in enumerate(sizes):
            grid = out[i].reshape(hmax, wmax, -1)[:h, :w].reshape(h * w, -1)
            tensors[f"golden.{b}.output.{i}"] = grid.contiguous()
    save_file(tensors, args.out, metadata={"config": json.dumps(config), "batches": json.dumps(batches),
                                           "transformers": transformers.__version__, "torch": torch.__version__})
    print(f"wrote {args.out}: transformers {transformers.__version__}, {sum(len(b) for b in batches)} images")


if __name__ == "__main__":
    main()
