#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Golden LaTeX OCR metrics for tests/core/train/latex_metrics_test.cpp and the cpm-tool metrics
integration test: an independent implementation (regular expressions here, a character scanner in
core/train/latex_metrics.cpp) of the tokenizer, exact match, normalized edit distance and corpus
BLEU-4, applied to real labels of the validation set with perturbed predictions.

No nltk or sacrebleu is needed: BLEU is written out as Papineni et al. (2002) define it for a
corpus, which is what sacrebleu computes with smooth_method="none" and torchtext's bleu_score
computes (see corpus_bleu4 for how nltk's corpus_bleu differs).

Run with Debian's interpreter:
  /usr/bin/python3 tests/core/train/make_metrics_goldens.py \
      --labels /work/shared/data/latex_ocr_full_val/labels.csv \
      --out tests/data/train/latex_metrics_goldens.json
"""
import argparse
import collections
import csv
import json
import math
import random
import re

# One token per match, whitespace between tokens ignored (the match's inner whitespace removed):
# \left / \right with their delimiter and \begin{env} / \end{env} are one token each, as the
# dataset writes them; a backslash before whitespace (control space) or at the end is the token
# "\"; any other backslash takes the letters of a command or one non-letter; else one character.
_DELIMITER = r"(?:\\[A-Za-z]+|\\[^A-Za-z\s]|[^\s\\])"
_TOKEN = re.compile(
    r"\\(?:left|right)(?![A-Za-z])\s*" + _DELIMITER
    + r"|\\(?:begin|end)\s*\{\s*[A-Za-z*]+\s*\}"
    + r"|\\[A-Za-z]+"
    + r"|\\[^A-Za-z\s]"
    + r"|\\"
    + r"|\S", re.ASCII)  # ASCII whitespace only, as in the C++


def tokenize(latex):
    return [re.sub(r"\s+", "", m, flags=re.ASCII) for m in _TOKEN.findall(latex)]


def edit_distance(a, b):
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def normalized_edit_distance(a, b):
    longest = max(len(a), len(b))
    return edit_distance(a, b) / longest if longest else 0.0


def ngrams(tokens, n):
    return collections.Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def corpus_bleu4(hypotheses, references):
    """Papineni's corpus BLEU: clipped n-gram matches and hypothesis n-gram counts summed over the
    corpus per order (nltk's corpus_bleu instead adds max(1, count) per sentence, which differs for
    hypotheses shorter than n), uniform weights 1/4, brevity penalty exp(1 - r/c) when c < r, and
    0 when any order has no match (no smoothing)."""
    matches, totals = [0] * 4, [0] * 4
    hyp_length = ref_length = 0
    for hyp, ref in zip(hypotheses, references):
        hyp_length += len(hyp)
        ref_length += len(ref)
        for n in range(1, 5):
            h, r = ngrams(hyp, n), ngrams(ref, n)
            matches[n - 1] += sum(min(count, r[gram]) for gram, count in h.items())
            totals[n - 1] += sum(h.values())
    if min(matches) == 0:
        return 0.0, matches, totals, hyp_length, ref_length
    log_precision = sum(0.25 * math.log(m / t) for m, t in zip(matches, totals))
    brevity = 1.0 if hyp_length >= ref_length else math.exp(1 - ref_length / hyp_length)
    return brevity * math.exp(log_precision), matches, totals, hyp_length, ref_length


def corpus_metrics(pairs):
    preds = [tokenize(p) for p, _ in pairs]
    refs = [tokenize(r) for _, r in pairs]
    bleu, matches, totals, hyp_length, ref_length = corpus_bleu4(preds, refs)
    return {
        "count": len(pairs),
        "exact_match": sum(p == r for p, r in zip(preds, refs)) / len(pairs),
        "normalized_edit_distance": sum(normalized_edit_distance(p, r) for p, r in zip(preds, refs)) / len(pairs),
        "bleu4": bleu,
        "ngram_matches": matches, "ngram_totals": totals,
        "prediction_length": hyp_length, "reference_length": ref_length,
    }


def respace(tokens, rng):
    """The same tokens written with other spacing: most spaces dropped where LaTeX allows it (not
    after a command before a letter, not after a control space), some doubled or made tabs."""
    out = tokens[0]
    for a, b in zip(tokens, tokens[1:]):
        needs_space = a == "\\" or (re.fullmatch(r".*\\[A-Za-z]+", a) and b[0].isalpha())
        roll = rng.random()
        out += (" " if needs_space else "") if roll < 0.7 else (" \t " if roll < 0.85 else "  ")
        out += b
    return out


def perturb(tokens, kind, rng, vocabulary):
    t = list(tokens)
    if kind == "delete":
        del t[rng.randrange(len(t))]
    elif kind == "substitute":
        t[rng.randrange(len(t))] = rng.choice(vocabulary)
    elif kind == "insert":
        t.insert(rng.randrange(len(t) + 1), rng.choice(vocabulary))
    elif kind == "swap":
        i = rng.randrange(len(t) - 1)
        t[i], t[i + 1] = t[i + 1], t[i]
    elif kind == "truncate":
        t = t[:len(t) // 2]
    elif kind == "three_edits":
        for k in ("delete", "substitute", "insert"):
            t = perturb(t, k, rng, vocabulary)
    return t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--labels", required=True, help="latex_ocr_full_val/labels.csv")
    ap.add_argument("--out", required=True)
    ap.add_argument("--count", type=int, default=40, help="labels sampled (5 per kind of perturbation)")
    args = ap.parse_args()
    with open(args.labels, newline="", encoding="utf-8") as f:
        labels = [row["text"] for row in csv.DictReader(f)]
    # How far the tokenizer is from the dataset's own space-separated tokens, over every label.
    differ = [t for t in labels if tokenize(t) != t.split()]
    print(f"{len(labels)} labels; tokenize() != split() on {len(differ)}, e.g. {differ[:3]}")

    rng = random.Random(20261129)
    sample = rng.sample([t for t in labels if len(t.split()) >= 6], args.count)
    vocabulary = sorted({tok for t in sample for tok in tokenize(t)})
    kinds = ["identical", "respaced", "delete", "substitute", "insert", "swap", "truncate", "three_edits"]
    pairs = []
    for i, ref in enumerate(sample):
        kind = kinds[i % len(kinds)]
        tokens = ref.split()
        if kind == "identical":
            pred = ref
        elif kind == "respaced":
            pred = respace(tokens, rng)
        else:
            pred = " ".join(perturb(tokens, kind, rng, vocabulary))
        pairs.append({"kind": kind, "prediction": pred, "reference": ref})
    # Edge cases: an empty prediction, another label's text, a two-token guess.
    pairs.append({"kind": "empty", "prediction": "", "reference": sample[0]})
    pairs.append({"kind": "other_label", "prediction": sample[2], "reference": sample[3]})
    pairs.append({"kind": "short", "prediction": "x ^ 2", "reference": sample[4]})
    for p in pairs:
        p["prediction_tokens"] = tokenize(p["prediction"])
        p["reference_tokens"] = tokenize(p["reference"])
        p["reference_split_equal"] = p["reference_tokens"] == p["reference"].split()
        p["edit_distance"] = edit_distance(p["prediction_tokens"], p["reference_tokens"])
        p["normalized_edit_distance"] = normalized_edit_distance(p["prediction_tokens"], p["reference_tokens"])

    # Hand-written tokenizer cases: spacing, merged delimiters and environments, control space.
    tokenizer_cases = [r"\frac{1}{2}", r"\frac { 1 } { 2 }", r"\mathrm { a r c } \sin x", r"\mathrm{arc}",
                       r"a\\b \\ c", r"\{ x \} \, \; \! \|", r"\left( x \right)", r"\left ( x \right )",
                       r"\left\{ \right.", r"\left \langle a \right\rangle", r"\begin{array} {cc} \end {array}",
                       r"\begin { matrix } a \end{matrix}", r"x \ y", "a\\", r"x^{2}_i", "\tα  + β\n",
                       r"\alpha\beta", r"\leftarrow \rightarrow", r"\left\Vert x \right\|", "",
                       r"x \left", r"\begin x", "a\u00a0b", "\\é", r"\right\ x"]
    tokenizer_cases = [{"latex": t, "tokens": tokenize(t)} for t in tokenizer_cases]

    kinds_present = sorted({p["kind"] for p in pairs})
    corpora = [dict(name="all", indices=list(range(len(pairs))))]
    for kind in kinds_present:
        corpora.append(dict(name=kind, indices=[i for i, p in enumerate(pairs) if p["kind"] == kind]))
    for c in corpora:
        c.update(corpus_metrics([(pairs[i]["prediction"], pairs[i]["reference"]) for i in c["indices"]]))
    # Hand-made corpora: no 4-gram in common (BLEU 0), a short prediction (brevity penalty).
    hand = []
    for name, corpus in (("no_four_gram_match", [("a b c", "a b c d"), ("x + y", "x - y")]),
                         ("brevity", [("a b c d e", "a b c d e f g h"), (r"\frac { 1 } { 2 }", r"\frac{1}{2}")]),
                         ("longer_prediction", [("a b c d e f", "a b c d e"), ("p q r s", "p q r s")])):
        hand.append(dict(name=name, pairs=[list(p) for p in corpus], **corpus_metrics(corpus)))

    with open(args.out, "w", encoding="utf-8") as f:
        json.dump({"generator": "tests/core/train/make_metrics_goldens.py",
                   "labels": "latex_ocr_full_val/labels.csv, " + str(args.count) + " sampled with seed 20261129",
                   "tokenizer_cases": tokenizer_cases, "pairs": pairs, "corpora": corpora,
                   "hand_corpora": hand}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    for c in corpora + hand:
        print(f"{c['name']:>20}: n={c['count']} exact={c['exact_match']:.4f} "
              f"ned={c['normalized_edit_distance']:.4f} bleu4={c['bleu4']:.6f}")


if __name__ == "__main__":
    main()
