#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""PEFT interoperability goldens for tests/core/train/peft_interop_test.cpp, both ways, from the
reference stack: transformers' Idefics2VisionTransformer (vpm) and Qwen2ForCausalLM (llm) and the
spec resampler of make_minicpmo_goldens.py, composed into one module with attributes `vpm`,
`resampler` and `llm` (as MiniCPMO has them) and loaded with a tiny cpmd checkpoint's tensors.

  python -> cpmd  get_peft_model with the recipe's LoraConfig (r 8, alpha 16, the regex over the
                  LLM's attention projections, modules_to_save resampler + vpm), every lora_B and
                  every modules_to_save copy perturbed from a seed, save_pretrained to --out-adapter;
                  its outputs are the `python.*` goldens.
  cpmd -> python  PeftModel.from_pretrained on the adapter cpmd's writer made
                  (tests/data/adapters/cpmd_written); any warning, and any adapter key that PEFT did
                  not load or loaded elsewhere, fails the run. Its outputs are the `cpmd.*` goldens.

`base.*` are the outputs without an adapter. Per set: vision [1, L / 16, vision hidden] (every
16th patch), resampler [1, query_num, hidden], hidden (the LLM's final norm output) [T, hidden],
logits at the columns `vocab_index` [T, K] and argmax over the whole vocabulary [T]: full logits
would be 600 KB a token. Everything runs on the CPU in float32.

The inputs come from cpm-tool, so both sides see the same pixels and prompt ids (pixels and ids are
checked against Pillow and the reference processor elsewhere):
  cpm-tool mkmodel --out .gpu-peft/tiny --preset tiny --dtype bf16 --seed 11
  cpm-tool preprocess --model .gpu-peft/tiny --image tests/data/images/formulas/0.png \
      --dump .gpu-peft/pixels.safetensors > .gpu-peft/preprocess.json
  cpm-tool prompt --model .gpu-peft/tiny --image tests/data/images/formulas/0.png \
      --text 'Convert the formula to LaTeX.' > .gpu-peft/prompt.json
Then, where transformers and peft are installed (the GPU host), with HF_HUB_OFFLINE=1:
  python3 make_peft_goldens.py --inputs .gpu-peft --cpmd-adapter tests/data/adapters/cpmd_written \
      --out-adapter tests/data/adapters/peft_python --out tests/data/adapters/peft_goldens.safetensors
(The README.md model card that save_pretrained adds is not kept in the fixture.)
"""
import argparse
import json
import os
import sys
import warnings

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "model"))
from make_minicpmo_goldens import Resampler  # noqa: E402

RECIPE_REGEX = r"llm\..*layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|o_proj)"
PATCH = 14
VISION_STRIDE = 16  # every 16th vision row is kept (the resampler's output depends on all of them)


class MiniCPMO(torch.nn.Module):
    """MiniCPMO.get_vllm_embedding + the LLM for one prompt; the slices are unpadded, so the
    vision tower sees each one alone."""

    def __init__(self, vpm, resampler, llm):
        super().__init__()
        self.vpm, self.resampler, self.llm = vpm, resampler, llm

    def forward(self, images, sizes, input_ids, image_bound):
        vision = [self.vpm(pixel_values=img.unsqueeze(0),
                           patch_attention_mask=torch.ones(1, h, w, dtype=torch.bool)).last_hidden_state[0]
                  for img, (h, w) in zip(images, sizes)]
        padded = torch.zeros(len(vision), max(v.shape[0] for v in vision), vision[0].shape[1])
        for i, v in enumerate(vision):
            padded[i, : v.shape[0]] = v
        features = self.resampler(padded, sizes)  # [N, query_num, hidden]
        embeds = self.llm.get_input_embeddings()(input_ids.unsqueeze(0)).clone()
        for k, (s, e) in enumerate(image_bound):
            embeds[0, s:e] = features[k]
        out = self.llm(inputs_embeds=embeds, position_ids=torch.arange(input_ids.shape[0]).unsqueeze(0))
        return padded, features, out.logits[0]


def build_base(model_dir):
    """The reference composition with the checkpoint's tensors (bf16 files, float32 here)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from transformers.models.idefics2.configuration_idefics2 import Idefics2VisionConfig
    from transformers.models.idefics2.modeling_idefics2 import Idefics2VisionTransformer

    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    llm_keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "rope_theta", "rms_norm_eps", "max_position_embeddings",
                "tie_word_embeddings", "hidden_act")
    llm = Qwen2ForCausalLM(Qwen2Config(**{k: cfg[k] for k in llm_keys}, attn_implementation="eager"))
    v = cfg["vision_config"]
    vc = Idefics2VisionConfig(**{k: v[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                                  "num_attention_heads", "image_size", "patch_size",
                                                  "layer_norm_eps", "hidden_act")})
    vc._attn_implementation = "eager"
    vpm = Idefics2VisionTransformer(vc)
    resampler = Resampler(cfg["query_num"], cfg["hidden_size"], v["hidden_size"], cfg["hidden_size"] // 128)
    model = MiniCPMO(vpm, resampler, llm).float().eval()

    weights = {}
    index = json.load(open(os.path.join(model_dir, "model.safetensors.index.json")))
    for shard in sorted(set(index["weight_map"].values())):
        weights.update(load_file(os.path.join(model_dir, shard)))
    result = model.load_state_dict({k: t.float() for k, t in weights.items()}, strict=False)
    missing = [k for k in result.missing_keys if k != "llm.lm_head.weight"]
    if missing or result.unexpected_keys:
        raise SystemExit(f"checkpoint does not fit the composition: missing {missing}, "
                         f"unexpected {result.unexpected_keys}")
    if cfg["tie_word_embeddings"] and llm.lm_head.weight.data_ptr() != llm.model.embed_tokens.weight.data_ptr():
        raise SystemExit("lm_head is not tied to embed_tokens")
    return model


def run(model, inputs):
    """-> dict of the outputs the goldens keep; `model` is the composition or a PeftModel of it."""
    hidden = {}
    norm = (model.get_base_model() if hasattr(model, "get_base_model") else model).llm.model.norm
    hook = norm.register_forward_hook(lambda _m, _i, out: hidden.update(h=out[0].detach().clone()))
    with torch.no_grad():
        vision, features, logits = model(inputs["images"], inputs["sizes"], inputs["input_ids"], inputs["bound"])
    hook.remove()
    return {"vision": vision[:, ::VISION_STRIDE].contiguous(), "resampler": features.contiguous(),
            "hidden": hidden["h"].contiguous(),
            "logits": logits[:, inputs["vocab_index"]].contiguous(), "argmax": logits.argmax(-1)}


def read_inputs(inputs_dir, vocab_size):
    pre = json.load(open(os.path.join(inputs_dir, "preprocess.json")))
    prompt = json.load(open(os.path.join(inputs_dir, "prompt.json")))
    pixels = load_file(os.path.join(inputs_dir, "pixels.safetensors"))
    images, sizes = [], []
    for i, info in enumerate(pre["images"]):
        h, w = info["tgt_size"]
        strip = pixels[f"image_{i}"]  # [3, 14, h*w*14], reshape_by_patch's layout
        images.append(strip.view(3, PATCH, h, w, PATCH).permute(0, 2, 1, 3, 4).reshape(3, h * PATCH, w * PATCH))
        sizes.append((h, w))
    g = torch.Generator().manual_seed(20261128)
    return {"images": images, "sizes": sizes, "input_ids": torch.tensor(prompt["input_ids"], dtype=torch.int64),
            "bound": [tuple(b) for b in prompt["image_bound"]],
            "vocab_index": torch.randperm(vocab_size, generator=g)[:256].sort().values}


def python_adapter(inputs, model_dir, out_dir):
    """The recipe's LoRA made by PEFT, perturbed so that every part of it changes the output."""
    from peft import LoraConfig, get_peft_model
    from peft.utils.other import ModulesToSaveWrapper

    torch.manual_seed(7)
    model = get_peft_model(build_base(model_dir), LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.0, target_modules=RECIPE_REGEX, modules_to_save=["resampler", "vpm"]))
    copies = [m.modules_to_save["default"] for m in model.modules() if isinstance(m, ModulesToSaveWrapper)]
    assert len(copies) == 2, copies
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B." in name:
                p.copy_(0.1 * torch.randn_like(p))
        for copy in copies:
            for p in copy.parameters():
                # Rounded to bfloat16 so the copies can be saved as such (half the fixture's size).
                p.copy_((p + 0.02 * torch.randn_like(p)).bfloat16().float())
    model.eval()
    for copy in copies:
        copy.to(torch.bfloat16)
    model.save_pretrained(out_dir)
    for copy in copies:
        copy.float()
    outputs = run(model, inputs)
    # PEFT's own round trip of what it saved gives the same outputs.
    again = run(load_strictly(build_base(model_dir), out_dir), inputs)
    for key in ("vision", "resampler", "hidden", "logits"):
        err = ((again[key] - outputs[key]).abs().max() / outputs[key].abs().max()).item()
        if err > 1e-6:
            raise SystemExit(f"{out_dir} reloaded by PEFT gives other {key}: relative error {err}")
    return outputs


def load_strictly(base, adapter_dir):
    """PeftModel.from_pretrained, failing on a warning about keys and unless every tensor of the
    file is now the adapter's state (no key missing, unexpected or loaded elsewhere). Other warnings
    are printed."""
    from peft import PeftModel, get_peft_model_state_dict

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = PeftModel.from_pretrained(base, adapter_dir).eval()
    for w in caught:
        print(f"{adapter_dir}: warning: {w.message}")
        if any(word in str(w.message).lower() for word in ("key", "missing", "unexpected", "mismatch")):
            raise SystemExit(f"{adapter_dir}: PEFT warned about keys: {w.message}")
    stored = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    state = get_peft_model_state_dict(model)
    if set(stored) != set(state):
        raise SystemExit(f"{adapter_dir}: not loaded: {sorted(set(stored) - set(state))}; "
                         f"missing from the file: {sorted(set(state) - set(stored))}")
    for key, t in stored.items():
        if not torch.equal(state[key].float(), t.float()):
            raise SystemExit(f"{adapter_dir}: {key} was not loaded as stored")
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--inputs", required=True, help="folder: tiny/, pixels.safetensors, preprocess.json, prompt.json")
    ap.add_argument("--cpmd-adapter", required=True)
    ap.add_argument("--out-adapter", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    import peft
    import safetensors
    import transformers

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}", flush=True)
    model_dir = os.path.join(args.inputs, "tiny")
    base = build_base(model_dir)
    inputs = read_inputs(args.inputs, base.llm.config.vocab_size)
    sets = {"base": run(base, inputs),
            "python": python_adapter(inputs, model_dir, args.out_adapter),
            "cpmd": run(load_strictly(build_base(model_dir), args.cpmd_adapter), inputs)}
    tensors = {"input_ids": inputs["input_ids"], "vocab_index": inputs["vocab_index"]}
    for name, outputs in sets.items():
        tensors.update({f"{name}.{k}": v for k, v in outputs.items()})
    for name in ("python", "cpmd"):
        diff = (sets[name]["logits"] - sets["base"]["logits"]).abs().max().item()
        print(f"{name}: max |logits - base| at the kept columns {diff:.4g}")
    card = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    meta = {"image_bound": inputs["bound"], "tgt_sizes": inputs["sizes"], "checkpoint": "tiny, bf16, seed 11",
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                         "peft": peft.__version__, "safetensors": safetensors.__version__},
            "host": f"{card}; computed on the CPU in float32"}
    save_file(tensors, args.out, metadata={"config": json.dumps(meta)})
    print(f"wrote {args.out} and {args.out_adapter}: {json.dumps(meta)}")


if __name__ == "__main__":
    main()
