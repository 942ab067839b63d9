#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Golden MiniCPM-o-2.6 prompts (ids and image_bound) from an independent Python implementation of
the reference processor (spec sections 5 and 6) on Hugging Face `tokenizers`.

The tokenizer is the real Qwen tokenizer.json plus the MiniCPM special tokens, added with
`tokenizers`' own add_special_tokens; the slicing grid follows MiniCPMVImageProcessor; the chat text
is Qwen2.5's ChatML with its default system turn; image_bound follows MiniCPMOProcessor._convert.

Run where `tokenizers` is installed (the GPU host):
  python3 make_prompt_goldens.py --tokenizer tokenizer.json --out tests/data/prompt/goldens.json
"""
import argparse
import json
import math

MINICPM_TOKENS = ["<image>", "</image>", "<ref>", "</ref>", "<box>", "</box>", "<quad>", "</quad>",
                  "<point>", "</point>", "<slice>", "</slice>", "<image_id>", "</image_id>",
                  "<|audio_start|>", "<|audio_end|>", "<|spk_bos|>", "<|spk|>", "<|spk_eos|>",
                  "<|tts_bos|>", "<|tts_eos|>", "<unk>"]
SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
IMAGE_TAG = "(<image>./</image>)"


def get_sliced_grid(width, height, max_slice_nums=9, scale_resolution=448):
    log_ratio = math.log(width / height)
    ratio = width * height / (scale_resolution * scale_resolution)
    multiple = min(math.ceil(ratio), max_slice_nums)
    if multiple <= 1:
        return None
    candidates = [n for n in (multiple - 1, multiple, multiple + 1) if n != 1 and n <= max_slice_nums]
    grids = [[m, n // m] for n in candidates for m in range(1, n + 1) if n % m == 0]
    best, best_err = grids[0], float("inf")
    for g in grids:
        err = abs(log_ratio - math.log(g[0] / g[1]))
        if err < best_err:
            best, best_err = g, err
    return best


def placeholder(k, grid, use_image_id=True, slice_mode=True):
    unk = "<unk>" * 64
    out = (f"<image_id>{k}</image_id>" if use_image_id else "") + "<image>" + unk + "</image>"
    if slice_mode and grid is not None:
        cols, rows = grid
        out += "\n".join("".join("<slice>" + unk + "</slice>" for _ in range(cols)) for _ in range(rows))
    return out


def chatml(messages, add_generation_prompt=True):
    out = ""
    if not messages or messages[0]["role"] != "system":
        out += f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
    for m in messages:
        out += f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n"
    if add_generation_prompt:
        out += "<|im_start|>assistant\n"
    return out


CASES = [
    # (name, image sizes, messages as lists of content items with "<img>" for an image, options)
    ("one_small_formula", [(400, 40)], [("user", ["<img>", "Convert this formula to LaTeX."])], {}),
    ("square_sliced", [(1344, 1344)], [("user", ["<img>", "What is this?"])], {}),
    ("800x600", [(800, 600)], [("user", ["<img>", "Read the equation."])], {}),
    ("wide", [(4000, 60)], [("user", ["<img>", "Transcribe."])], {}),
    ("tall", [(150, 2000)], [("user", ["<img>", "Transcribe."])], {}),
    ("two_images", [(448, 448), (1000, 500)], [("user", ["<img>", "<img>", "Are these the same formula?"])], {}),
    ("text_first", [(640, 480)], [("user", ["图片里写的是什么？", "<img>"])], {}),
    ("system_and_history", [(900, 120)],
     [("system", ["You are a LaTeX OCR engine."]), ("user", ["<img>", "OCR:"]), ("assistant", ["x^2"]),
      ("user", ["Again, with \\frac{a}{b} spacing."])], {}),
    ("max_slice_nums_4", [(2000, 1500)], [("user", ["<img>", "OCR"])], {"max_slice_nums": 4}),
    ("no_image_id", [(1344, 896)], [("user", ["<img>", "OCR"])], {"use_image_id": False}),
    ("no_generation_prompt", [(300, 80)], [("user", ["<img>", "OCR"]), ("assistant", ["\\alpha + \\beta"])],
     {"add_generation_prompt": False}),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    import tokenizers
    from tokenizers import AddedToken
    tok = tokenizers.Tokenizer.from_file(args.tokenizer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in MINICPM_TOKENS])
    ids = {t: tok.token_to_id(t) for t in MINICPM_TOKENS}
    start_ids = {ids["<image>"], ids["<slice>"]}
    end_ids = {ids["</image>"], ids["</slice>"]}
    out = {"tokenizers_version": tokenizers.__version__, "special_ids": ids, "cases": []}
    for name, sizes, turns, opts in CASES:
        max_slice_nums = opts.get("max_slice_nums", 9)
        grids = [get_sliced_grid(w, h, max_slice_nums) for w, h in sizes]
        messages = []
        for role, items in turns:
            messages.append({"role": role, "content": "\n".join(IMAGE_TAG if i == "<img>" else i for i in items)})
        text = chatml(messages, opts.get("add_generation_prompt", True))
        chunks = text.split(IMAGE_TAG)
        final = chunks[0]
        for k, grid in enumerate(grids):
            final += placeholder(k, grid, opts.get("use_image_id", True)) + chunks[k + 1]
        input_ids = tok.encode(final).ids
        starts = [i + 1 for i, t in enumerate(input_ids) if t in start_ids]
        ends = [i for i, t in enumerate(input_ids) if t in end_ids]
        out["cases"].append({"name": name, "sizes": sizes, "turns": turns, "options": opts, "grids": grids,
                             "text": final, "input_ids": input_ids,
                             "image_bound": [[s, e] for s, e in zip(starts, ends)]})
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False)
    print(f"wrote {len(out['cases'])} prompt cases to {args.out} (tokenizers {tokenizers.__version__}); "
          f"<image>={ids['<image>']} <slice>={ids['<slice>']} <unk>={ids['<unk>']}")


if __name__ == "__main__":
    main()
