#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""The matrix arithmetic of one training step of the recipe, per train_bench config, and the time it
takes at a card's dense bf16 peak: a lower bound on any implementation's step (elementwise kernels,
softmax and memory traffic come on top).

The step, as tests/bench/train_bench.cpp and ../shared/bench/train_step.py run it: batch 1, T tokens,
n_images 448x448 images (1,024 patches each), the last 100 positions labelled; LoRA r 64 on q/k/v/o
of the frozen LLM, whose decoder layers are checkpointed (forward, recomputation, input gradients);
the vision tower (recomputed under checkpointing unless --no-vision-recompute, as the baseline runs
it) and the resampler trained in full (forward, input and weight gradients). Shapes are
MiniCPM-o-2.6's (../shared/docs/minicpm-o-2_6.md): SigLIP 27 x 1152 / 4304 / 16 heads, resampler 64
queries into 3584, Qwen2 28 x 3584 / 18944 / 28 + 4 heads of 128, vocabulary 151,700.

    /usr/bin/python3 tests/bench/training_flops.py [--peak-tflops 989] [--no-vision-recompute]
"""
import argparse

VISION = dict(layers=27, hidden=1152, inter=4304, patch_in=3 * 14 * 14, patches=1024)
QUERIES, LLM_HIDDEN = 64, 3584
LLM = dict(layers=28, hidden=3584, inter=18944, q_out=28 * 128, kv_out=4 * 128, vocab=151700)
LORA_R, LABELLED = 64, 100
CONFIGS = {"T256_1img": (256, 1), "T512_1img": (512, 1), "T1024_10img": (1024, 10)}


def step_flops(tokens, images, vision_recompute=True):
    """FLOPs (2 per multiply-add) of one step, by part."""
    v, l = VISION, LLM
    n = v["patches"]
    vision_passes = 4 if vision_recompute else 3  # forward (+ recomputation) + input and weight gradients
    per_token = 4 * v["hidden"] ** 2 + 2 * v["hidden"] * v["inter"]  # q, k, v, o, fc1, fc2
    vision = images * n * per_token * v["layers"] * vision_passes
    vision_attention = images * 2 * n * n * v["hidden"] * v["layers"] * vision_passes  # QK^T and AV
    patch_embedding = images * n * v["patch_in"] * v["hidden"] * 2  # forward + weight gradient
    h = LLM_HIDDEN
    # kv_proj, the key/value in_proj over the image's patches; query in_proj, out_proj and proj over
    # the 64 queries; attention of 64 queries over n keys. Forward + input and weight gradients.
    resampler = images * (n * v["hidden"] * h + 2 * n * h * h + 3 * QUERIES * h * h + 2 * QUERIES * n * h) * 3
    per_token = l["hidden"] * (l["q_out"] + 2 * l["kv_out"]) + l["q_out"] * l["hidden"] + 3 * l["hidden"] * l["inter"]
    llm = tokens * per_token * l["layers"] * 3  # forward, recomputation, input gradients (frozen)
    llm_attention = 2 * (tokens * tokens // 2) * l["q_out"] * l["layers"] * 4  # causal; backward twice forward
    lora = tokens * l["layers"] * LORA_R * (4 * l["hidden"] + 2 * l["q_out"] + 2 * l["kv_out"]) * 4
    lm_head = LABELLED * l["hidden"] * l["vocab"] * 2  # forward + input gradients
    parts = dict(vision=vision + patch_embedding, vision_attention=vision_attention, resampler=resampler,
                 llm=llm, llm_attention=llm_attention, lora=lora, lm_head=lm_head)
    return {k: 2 * x for k, x in parts.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peak-tflops", type=float, default=989.0,
                    help="dense bf16 peak of the card (H100 SXM / H200: 989)")
    ap.add_argument("--no-vision-recompute", action="store_true",
                    help="the vision tower's activations kept (the baseline's default), not recomputed")
    args = ap.parse_args()
    for name, (tokens, images) in CONFIGS.items():
        parts = step_flops(tokens, images, not args.no_vision_recompute)
        total = sum(parts.values())
        detail = ", ".join(f"{k} {v / 1e12:.2f}" for k, v in parts.items())
        print(f"{name}: {total / 1e12:.1f} TFLOP -> {total / (args.peak_tflops * 1e12) * 1e3:.1f} ms at "
              f"{args.peak_tflops:g} TFLOP/s ({detail})")


if __name__ == "__main__":
    main()
