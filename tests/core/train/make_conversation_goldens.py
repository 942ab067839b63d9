#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Golden training examples for core/train (conversation.h, collator.h), made by the OpenBMB
fine-tuning recipe's OWN code: finetune/dataset.py's preprocess() -> slice_image, get_grid_placeholder,
conversation_to_ids, conversation_to_ids_qwen2, reshape_by_patch, and data_collator(), unmodified,
with the Hugging Face tokenizer of a tiny `cpm-tool mkmodel --preset tiny` checkpoint (the real Qwen
BPE plus MiniCPM-o's special tokens).

The recipe's file is third-party code and is not kept in this repository: pass it with --recipe.
The copy the committed fixture was made with:
  repository Waste-NANDO/MiniCPM-V, commit 7ee9428a9627c1f14c7a72d661385029400dc680,
  path finetune/dataset.py (20,501 characters; its sha256 is written into the fixture).
It is a fork of OpenBMB/MiniCPM-V carrying the recipe's multi-image dataset.py of the
MiniCPM-V-2.6 / MiniCPM-o-2.6 generation (Qwen2 chat template, `new_schema` slice placeholders,
`<image_id>` only on sliced images, labels pre-shifted from `context`, assistant span from
assistant_idx + 1). The one difference from OpenBMB/MiniCPM-o commit 53c0174 ("Update to
MiniCPM-o 2.6") that matters here is the name of the LLM type: that commit calls it "qwen"
(OpenBMB/MiniCPM-o finetune/finetune_lora.sh: "if use openbmb/MiniCPM-o-2_6 or
openbmb/MiniCPM-V-2_6, please set LLM_TYPE=qwen"), this copy "qwen2"; LLM_TYPE below follows the
copy. A known bug of this copy: a single-image record whose first turn has no `<image>` raises
UnboundLocalError (`conversation[0]` for `conversations[0]`), so every single-image case here
writes `<image>`; the C++ tests check the no-tag form against the tagged one instead.

Shims, all outside the recipe's code:
  - the tokenizer is PreTrainedTokenizerFast over the checkpoint's tokenizer.json with the
    attributes MiniCPM-o's own tokenizer class (MiniCPM_o_2_6TokenizerFast) adds: im_start,
    im_end, slice_start, slice_end, im_id_start, im_id_end and their *_id, eos_id; and
    apply_chat_template(tokenize=True) returns the id list as transformers 4 did (transformers 5
    returns a BatchEncoding);
  - transform is finetune.py's build_transform() (ToTensor + Normalize(0.5, 0.5)); without
    torchvision, the same float32 operations in torch;
  - slice_config is what finetune.py passes: {"max_slice_nums", "scale_resolution": 448,
    "patch_size": 14}; query_nums 64, batch_vision True, as finetune.py passes them;
  - images are opened as SupervisedDataset.__getitem__ opens them
    (Image.open(path).convert("RGB")), and its output dict is rebuilt around preprocess() as
    __getitem__ does (calling __getitem__ itself would hide an error behind a random retry).

Run where torch, transformers and Pillow are installed (the GPU host), from the repository root:
  python3 tests/core/train/make_conversation_goldens.py --recipe dataset.py \\
      --tokenizer-dir TINY_CHECKPOINT --out tests/data/train/conversation_goldens.json
"""
import argparse
import hashlib
import importlib.util
import json
import os
import platform
import sys

import numpy as np
import torch
from PIL import Image

LLM_TYPE = "qwen2"  # the copy's name for MiniCPM-o-2.6's Qwen2 LLM ("qwen" at 53c0174)
QUERY_NUMS = 64
PATCH_SIZE = 14
SCALE_RESOLUTION = 448
SAMPLES_PER_STRIP = 64

# core/train/dataset.h kDefaultCsvPrompt: what a CSV row's user turn asks.
CSV_PROMPT = "你是一个LaText OCR助手,目标是读取用户输入的照片，转换成LaTex公式。"

FORMULAS = "tests/data/images/formulas"
WIDE = "tests/data/train/images/wide_formula.png"  # 1100x220: sliced into [3, 1] (2 slices at max 2)

# (name, image as the dataset file gives it, conversations, model_max_length, max_slice_nums).
# Image paths are relative to the repository root.
CASES = [
    ("single_unsliced", f"{FORMULAS}/1188.png",
     [{"role": "user", "content": "<image>\nConvert this formula to LaTeX."},
      {"role": "assistant", "content": "\\frac { a } { b } + c ^ { 2 }"}], 2048, 9),
    ("single_sliced_wide", WIDE,
     [{"role": "user", "content": "What is the LaTeX of <image> ?"},
      {"role": "assistant", "content": "\\sum _ { i = 1 } ^ { n } x _ { i } = \\int _ { 0 } ^ { 1 } f ( t ) d t"}],
     2048, 9),
    ("wide_max_slice_nums_2", WIDE,
     [{"role": "user", "content": "<image>\nTranscribe."},
      {"role": "assistant", "content": "E = m c ^ { 2 }"}], 2048, 2),
    ("multi_image", {"<image_00>": f"{FORMULAS}/1758.png", "<image_01>": WIDE},
     [{"role": "user", "content": "Compare <image_00> and <image_01>. Same formula?"},
      {"role": "assistant", "content": "No, they differ."}], 4096, 9),
    ("multi_image_tags_only", {"<image_00>": f"{FORMULAS}/2137.png", "<image_01>": f"{FORMULAS}/1378.png"},
     [{"role": "user", "content": "<image_00><image_01>"},
      {"role": "assistant", "content": "Two formulas."}], 4096, 9),
    ("multi_turn", f"{FORMULAS}/1378.png",
     [{"role": "user", "content": "<image>\nRead the formula."},
      {"role": "assistant", "content": "x ^ { 2 } + y ^ { 2 }"},
      {"role": "user", "content": "And its value at x = y = 1?"},
      {"role": "assistant", "content": "2"}], 2048, 9),
    ("truncated", f"{FORMULAS}/1188.png",
     [{"role": "user", "content": "<image>\nConvert this formula to LaTeX."},
      {"role": "assistant", "content": " ".join(["\\alpha _ { %d }" % i for i in range(40)])}], 110, 9),
    ("csv_row", f"{FORMULAS}/0.png",
     [{"role": "user", "content": "<image>\n" + CSV_PROMPT},
      {"role": "assistant", "content": "[ { \\bar { K } } _ { a } ^ { - } ( p ) , { \\bar { K } } _ { b } ^ { - } ( k ) ]"}],
     2048, 9),
]

# data_collator on examples of these cases: the default max_length, then one that trims.
COLLATOR_CASES = ["single_unsliced", "multi_turn", "truncated"]


def load_recipe(path):
    spec = importlib.util.spec_from_file_location("recipe_dataset", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_tokenizer(directory):
    try:
        from transformers import PreTrainedTokenizerFast
    except ImportError:  # transformers 5 may drop the alias
        from transformers import TokenizersBackend as PreTrainedTokenizerFast

    class MiniCPMOTokenizer(PreTrainedTokenizerFast):
        # The attributes of MiniCPM-o-2.6's tokenizer class that the recipe reads.
        im_start, im_end = "<image>", "</image>"
        slice_start, slice_end = "<slice>", "</slice>"
        im_id_start, im_id_end = "<image_id>", "</image_id>"

        @property
        def eos_id(self):
            return self.eos_token_id

        @property
        def im_start_id(self):
            return self.convert_tokens_to_ids(self.im_start)

        @property
        def im_end_id(self):
            return self.convert_tokens_to_ids(self.im_end)

        @property
        def slice_start_id(self):
            return self.convert_tokens_to_ids(self.slice_start)

        @property
        def slice_end_id(self):
            return self.convert_tokens_to_ids(self.slice_end)

        def apply_chat_template(self, conversation, **kwargs):
            if kwargs.get("tokenize", True):
                kwargs["return_dict"] = False
            out = super().apply_chat_template(conversation, **kwargs)
            if kwargs.get("tokenize", True) and hasattr(out, "keys"):
                out = out["input_ids"]
            return out

    with open(os.path.join(directory, "tokenizer_config.json"), encoding="utf-8") as f:
        config = json.load(f)
    tok = MiniCPMOTokenizer(tokenizer_file=os.path.join(directory, "tokenizer.json"),
                            eos_token=config["eos_token"], pad_token=config["pad_token"],
                            unk_token=config["unk_token"])
    tok.chat_template = config["chat_template"]
    return tok


def build_transform():
    try:
        from torchvision import transforms
        return transforms.Compose([transforms.ToTensor(),
                                   transforms.Normalize(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))])
    except ImportError:
        def transform(image):  # ToTensor: u8 HWC -> float32 CHW / 255; Normalize: (x - m) / s
            x = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1)
            x = x.contiguous().to(torch.float32).div(255)
            mean = torch.tensor([0.5, 0.5, 0.5], dtype=torch.float32)[:, None, None]
            std = torch.tensor([0.5, 0.5, 0.5], dtype=torch.float32)[:, None, None]
            return x.sub_(mean).div_(std)
        return transform


def get_item(recipe, root, image, conversations, tokenizer, transform, max_length, max_slice_nums):
    # SupervisedDataset.__getitem__ around preprocess(), without its catch-all retry.
    if isinstance(image, str):
        images_dict = {"<image>": Image.open(os.path.join(root, image)).convert("RGB")}
    else:
        images_dict = {name: Image.open(os.path.join(root, path)).convert("RGB")
                       for name, path in image.items()}
    slice_config = {"max_slice_nums": max_slice_nums, "scale_resolution": SCALE_RESOLUTION,
                    "patch_size": PATCH_SIZE}
    ret = recipe.preprocess(images_dict, conversations, tokenizer, transform, query_nums=QUERY_NUMS,
                            slice_config=slice_config, llm_type=LLM_TYPE, patch_size=PATCH_SIZE,
                            batch_vision=True, max_length=max_length)
    return dict(input_ids=ret["input_ids"], position_ids=ret["position_ids"], labels=ret["target"],
                attention_mask=torch.ones_like(ret["input_ids"], dtype=torch.bool),
                pixel_values=ret["pixel_values"], tgt_sizes=ret["tgt_sizes"],
                image_bound=ret["image_bound"])


def strip_summary(strip):
    flat = strip.detach().to(torch.float32).reshape(-1)
    n = flat.numel()
    index = [(k * (n - 1)) // (SAMPLES_PER_STRIP - 1) for k in range(SAMPLES_PER_STRIP)]
    return {"shape": list(strip.shape),
            "sum": float(flat.double().sum()),
            "sum_sq": float((flat.double() ** 2).sum()),
            "samples": [[i, float(flat[i])] for i in index]}


def tolist(x):
    return x.tolist() if hasattr(x, "tolist") else list(x)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", required=True, help="the recipe's finetune/dataset.py")
    parser.add_argument("--tokenizer-dir", required=True,
                        help="a cpm-tool mkmodel checkpoint (tokenizer.json, tokenizer_config.json)")
    parser.add_argument("--root", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."),
                        help="repository root the image paths are relative to")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    recipe = load_recipe(args.recipe)
    tokenizer = load_tokenizer(args.tokenizer_dir)
    transform = build_transform()
    with open(args.recipe, "rb") as f:
        recipe_sha256 = hashlib.sha256(f.read()).hexdigest()

    cases, items = [], {}
    for name, image, conversations, max_length, max_slice_nums in CASES:
        item = get_item(recipe, args.root, image, conversations, tokenizer, transform, max_length,
                        max_slice_nums)
        items[name] = item
        cases.append({
            "name": name, "image": image, "conversations": conversations,
            "model_max_length": max_length, "max_slice_nums": max_slice_nums,
            "input_ids": tolist(item["input_ids"]), "labels": tolist(item["labels"]),
            "position_ids": tolist(item["position_ids"]),
            "image_bound": [list(map(int, b)) for b in tolist(item["image_bound"])],
            "tgt_sizes": [list(map(int, t)) for t in tolist(item["tgt_sizes"])],
            "pixels": [strip_summary(p) for p in item["pixel_values"]],
        })

    collator = []
    examples = [items[n] for n in COLLATOR_CASES]
    # A trim that keeps every image span (the C++ collator refuses to cut one).
    trim = max(int(b[1]) for e in examples for b in tolist(e["image_bound"])) + 4
    for max_length in (2048, trim):
        batch = recipe.data_collator(examples, max_length=max_length)
        collator.append({
            "cases": COLLATOR_CASES, "max_length": max_length,
            "input_ids": batch["input_ids"].tolist(), "labels": batch["labels"].tolist(),
            "position_ids": batch["position_ids"].tolist(),
            "attention_mask": batch["attention_mask"].to(torch.int64).tolist(),
        })

    import transformers
    provenance = {
        "script": "tests/core/train/make_conversation_goldens.py",
        "recipe": "Waste-NANDO/MiniCPM-V@7ee9428a9627c1f14c7a72d661385029400dc680:finetune/dataset.py",
        "recipe_sha256": recipe_sha256, "llm_type": LLM_TYPE,
        "python": platform.python_version(), "torch": torch.__version__,
        "transformers": transformers.__version__, "numpy": np.__version__,
        "pillow": Image.__version__,
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump({"provenance": provenance, "cases": cases, "collator": collator}, f,
                  ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {args.out}: {len(cases)} cases, {len(collator)} batches", file=sys.stderr)


if __name__ == "__main__":
    main()
