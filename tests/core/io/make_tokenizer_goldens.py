#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Golden token ids from Hugging Face `tokenizers` for the tokenizer conformance test.

Builds a deterministic corpus (every formula of the LaTeX_OCR validation labels, English and Chinese
prompts, emoji and other multi-byte text, whitespace runs, digits, special tokens inside text,
random valid UTF-8), encodes it with `tokenizers` (the reference implementation), and writes gzipped
JSON Lines: a header object, then {"text": ..., "ids": [...], "decoded": ...} per string
("decoded" only where tokenizers' decode differs from the text).

Run where `tokenizers` is installed (the GPU host):
  python3 make_tokenizer_goldens.py --tokenizer tokenizer.json --labels labels.csv \
      --out tests/data/tokenizer/qwen_goldens.jsonl.gz [--bench]
"""
import argparse
import csv
import gzip
import hashlib
import json
import random
import time

PROMPTS_EN = [
    "Convert the formula in this image to LaTeX.",
    "What is written in the picture? Answer with LaTeX only.",
    "Transcribe the equation exactly, keeping spacing commands like \\, and \\quad.",
    "Please read the handwritten math and give me the LaTeX source.",
    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
    "The quick brown fox jumps over the lazy dog's back; isn't it? We'll see, they've said, I'm sure.",
    "Don't, won't, can't, shouldn't've, Y'ALL'D, IT'S, THEY'RE",
    "e-mail: someone@example.com, URL: https://example.org/a?b=c&d=e#f",
    "C++ code: for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }",
    "Python: def f(x):\n    return x ** 2 + 1\n",
]
PROMPTS_ZH = [
    "请将图片中的公式转换为LaTeX代码。",
    "图片里写的是什么？请只用LaTeX回答。",
    "这是一个包含积分和求和符号的复杂数学公式，请仔细识别。",
    "你好，世界！今天天气很好。",
    "把这道题的答案写成 \\frac{a}{b} 的形式。",
    "矩阵 A 的特征值为 λ₁ 和 λ₂，求 det(A)。",
    "日本語のテキストも少し：数式を読み取ってください。",
    "한국어 문장도 포함합니다: 수식을 LaTeX로 바꿔 주세요.",
]
MULTIBYTE = [
    "😀😃😄😁😆😅😂🤣☺️😊", "👩‍👩‍👧‍👦 family, 🏳️‍🌈 flag, 👍🏽 skin tone", "∑∏∫∮∂∇√∞≈≠≤≥±×÷",
    "αβγδεζηθικλμνξοπρστυφχψω ΑΒΓΔ", "Ünïcödé çåfé naïve résumé", "e\u0301 a\u0308 o\u0302 (combining)",
    "\u1100\u1161\u11a8 (Hangul jamo)", "ﬁ ﬂ ﬀ ligatures, Ⅻ roman, ① circled", "℃ ℉ Å K (Kelvin sign)",
    "\u200b zero width \u200d joiner \ufeff bom", "ſ long s, 'ſ apostrophe", "Ωmega ÅNGSTRÖM ǅ titlecase",
    "𝔸𝔹ℂ 𝕏 𝓛 math alphanumerics", "中文、English、にほんご、한국어 mixed", "\u00a0non-breaking\u3000ideographic space",
]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|fim_prefix|>", "<tool_call>"]


def build_corpus(labels_path, seed=20261128):
    rng = random.Random(seed)
    corpus = []
    with open(labels_path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            corpus.append(row["text"])
    corpus += PROMPTS_EN + PROMPTS_ZH + MULTIBYTE
    ws = [" ", "  ", "   ", "\t", "\n", "\r\n", "\n\n", " \n", "\t \t", "\u3000"]
    for _ in range(400):
        parts = [rng.choice(ws) * rng.randint(1, 4) if rng.random() < 0.5 else rng.choice(["x", "ab", "1", "。", "\\frac"])
                 for _ in range(rng.randint(1, 8))]
        corpus.append("".join(parts))
    for _ in range(300):
        n = rng.randint(1, 25)
        corpus.append("".join(rng.choice("0123456789") for _ in range(n)) + rng.choice(["", " ", ".5", ",000", "e-3", "%"]))
    for _ in range(300):
        words = [rng.choice(PROMPTS_EN + PROMPTS_ZH).split(" ")[0] for _ in range(rng.randint(0, 3))]
        pieces = []
        for w in words + [rng.choice(SPECIALS) for _ in range(rng.randint(1, 3))]:
            pieces.append(w)
        rng.shuffle(pieces)
        corpus.append(rng.choice(["", " ", "\n"]).join(pieces))
    # Random valid UTF-8 from several ranges (ASCII, Latin, CJK, emoji, math, private use), no
    # surrogates; half NFC-normalized text, half whatever comes out.
    ranges = [(0x20, 0x7e), (0x00a0, 0x024f), (0x0370, 0x03ff), (0x0400, 0x04ff), (0x0590, 0x06ff),
              (0x0900, 0x097f), (0x3040, 0x30ff), (0x4e00, 0x9fff), (0xac00, 0xd7a3), (0x1f300, 0x1faff),
              (0x1d400, 0x1d7ff), (0xe000, 0xe0ff), (0x0000, 0x001f), (0x0300, 0x036f), (0x2000, 0x206f)]
    for _ in range(2200):
        chars = []
        for _ in range(rng.randint(1, 40)):
            lo, hi = rng.choice(ranges)
            chars.append(chr(rng.randint(lo, hi)))
        corpus.append("".join(chars))
    return corpus


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--labels", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--bench", action="store_true", help="also time tokenizers' encode on the corpus")
    args = ap.parse_args()
    import tokenizers
    tok = tokenizers.Tokenizer.from_file(args.tokenizer)
    corpus = build_corpus(args.labels)
    with open(args.tokenizer, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    header = {"tokenizers_version": tokenizers.__version__, "tokenizer_sha256": sha, "count": len(corpus),
              "generator": "tests/core/io/make_tokenizer_goldens.py"}
    with gzip.open(args.out, "wt", encoding="utf-8", compresslevel=9) as out:
        out.write(json.dumps(header, ensure_ascii=False) + "\n")
        for text in corpus:
            ids = tok.encode(text).ids
            rec = {"text": text, "ids": ids}
            decoded = tok.decode(ids, skip_special_tokens=False)
            if decoded != text:
                rec["decoded"] = decoded
            out.write(json.dumps(rec, ensure_ascii=False) + "\n")
    print(f"wrote {len(corpus)} strings to {args.out} (tokenizers {tokenizers.__version__})")
    if args.bench:
        chars = sum(len(t.encode("utf-8")) for t in corpus)
        for label, fn in [("encode (1 thread, one call per string)", lambda: [tok.encode(t) for t in corpus]),
                          ("encode_batch (all threads)", lambda: tok.encode_batch(corpus))]:
            fn()  # warm-up
            best = min(_timed(fn) for _ in range(3))
            ntok = sum(len(e.ids) for e in tok.encode_batch(corpus))
            print(f"tokenizers {label}: {len(corpus)/best:,.0f} strings/s, {chars/best/1e6:.2f} MB/s, "
                  f"{ntok/best:,.0f} tokens/s ({best*1000:.1f} ms for the corpus)")


def _timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
