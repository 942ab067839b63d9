#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Goldens for train/adamw and train/lr_schedule: torch.optim.AdamW (Debian's PyTorch, single-tensor
path) on three parameters over five steps with given gradients, with learning rates from the
formulas of transformers' get_{cosine,linear,constant}_schedule_with_warmup (optimization.py;
transformers is not installed here, so its lambdas are transcribed below).

  /usr/bin/python3 tests/core/train/make_adamw_goldens.py > tests/data/train/adamw_goldens.json
"""
import json
import math

import torch


def cosine(step, warmup, total, num_cycles=0.5):
    if step < warmup:
        return float(step) / float(max(1, warmup))
    progress = float(step - warmup) / float(max(1, total - warmup))
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress)))


def linear(step, warmup, total):
    if step < warmup:
        return float(step) / float(max(1, warmup))
    return max(0.0, float(total - step) / float(max(1, total - warmup)))


def constant(step, warmup, total):
    if step < warmup:
        return float(step) / float(max(1.0, warmup))
    return 1.0


def main():
    g = torch.Generator().manual_seed(0)
    shapes = {"w2d": [3, 4], "bias": [4], "w3d": [2, 2, 3]}
    decay = {"w2d": True, "bias": False, "w3d": True}
    params = {k: torch.randn(s, generator=g) for k, s in shapes.items()}
    steps = 5
    grads = [{k: torch.randn(s, generator=g) * 0.1 for k, s in shapes.items()} for _ in range(steps)]
    peak, warmup, total = 2e-3, 2, 5
    lrs = [peak * cosine(i, warmup, total) for i in range(steps)]
    opts = dict(betas=(0.9, 0.95), eps=1e-8, foreach=False)
    tensors = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    opt = torch.optim.AdamW([
        {"params": [tensors[k] for k in shapes if decay[k]], "weight_decay": 0.1},
        {"params": [tensors[k] for k in shapes if not decay[k]], "weight_decay": 0.0},
    ], lr=peak, **opts)
    after = []
    for i in range(steps):
        for group in opt.param_groups:
            group["lr"] = lrs[i]
        for k in shapes:
            tensors[k].grad = grads[i][k].clone()
        opt.step()
        after.append({k: tensors[k].detach().flatten().tolist() for k in shapes})
    schedules = {name: [f(i, 3, 10) for i in range(12)] for name, f in
                 (("cosine", cosine), ("linear", linear), ("constant", constant))}
    print(json.dumps({
        "source": f"torch {torch.__version__} torch.optim.AdamW(foreach=False); transformers schedule lambdas",
        "shapes": shapes, "decay": decay, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.1,
        "params": {k: v.flatten().tolist() for k, v in params.items()},
        "grads": [{k: v.flatten().tolist() for k, v in step.items()} for step in grads],
        "lrs": lrs, "after": after,
        "schedule": {"warmup": 3, "total": 10, "factors": schedules},
    }))


if __name__ == "__main__":
    main()
