// SPDX-License-Identifier: Apache-2.0
//
// Evaluation of LaTeX OCR: predictions and references are tokenized the same way, then compared by
// exact match, normalized edit distance and corpus BLEU-4 over those tokens. Pure functions of
// their inputs; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace cpm::core::train {

// LaTeX source -> tokens, whitespace between tokens ignored (`\frac{1}{2}` and `\frac { 1 } { 2 }`
// give the same tokens). The tokens are those of the dataset's labels, which separate every token
// by a space (the validation labels tokenize to their split() except where they write `--`, which
// is two `-` here):
//   - a command: a backslash and its letters (`\frac`, `\alpha`); letters after it are their own
//     tokens (`\mathrm{arc}` -> `\mathrm` `{` `a` `r` `c` `}`);
//   - `\left` / `\right` with their delimiter (`\left(`, `\left\{`, `\right.`, `\right\rangle`),
//     and `\begin{env}` / `\end{env}`, as one token each, as the dataset writes them;
//   - a backslash and one non-letter character (`\\`, `\{`, `\,`, `\|`);
//   - a backslash before whitespace (control space) or at the end: the token `\`;
//   - otherwise one character (a UTF-8 code point): braces, `^`, `_`, digits, letters, operators.
std::vector<std::string> tokenize_latex(std::string_view latex);

// Levenshtein distance between token sequences (insertions, deletions, substitutions cost 1).
int64_t token_edit_distance(const std::vector<std::string>& a, const std::vector<std::string>& b);

// Corpus BLEU-4 as Papineni et al. define it, which is sacrebleu's with smooth_method="none" and
// torchtext's bleu_score: clipped n-gram matches and prediction n-gram counts summed over the
// corpus for n = 1..4, the geometric mean of their ratios (uniform weights), times the brevity
// penalty exp(1 - r/c) when the total prediction length c is below the total reference length r.
// Without smoothing, an order with no match makes the score 0 (so does an empty corpus of
// predictions). nltk's corpus_bleu differs only in adding max(1, count) per sentence to each
// denominator, which matters for predictions shorter than 4 tokens. REQUIRES: equal sizes.
double corpus_bleu4(const std::vector<std::vector<std::string>>& predictions,
                    const std::vector<std::vector<std::string>>& references);

struct LatexMetrics {
  int64_t count = 0;                    // (prediction, reference) pairs
  double exact_match = 0;               // fraction of pairs whose token sequences are equal
  double normalized_edit_distance = 0;  // mean over pairs of edit distance / max(len); 0 is best
  double bleu4 = 0;                     // corpus_bleu4 of the tokens
};

// Metrics of predictions[i] against references[i], both tokenized by tokenize_latex. A pair of two
// empty sequences has edit distance 0. Errors: InvalidArgument when the sizes differ or there are
// no pairs.
absl::StatusOr<LatexMetrics> latex_metrics(const std::vector<std::string>& predictions,
                                           const std::vector<std::string>& references);

}  // namespace cpm::core::train
