// SPDX-License-Identifier: Apache-2.0
#include "train/latex_metrics.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <unordered_map>

#include "absl/status/status.h"

namespace cpm::core::train {

namespace {

bool is_letter(char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); }

// ASCII whitespace only: a non-breaking space is a character of the formula, not a separator.
bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

// Bytes of the UTF-8 code point starting at `at` (1 for a stray continuation or invalid byte).
size_t code_point_length(std::string_view s, size_t at) {
  const auto lead = static_cast<unsigned char>(s[at]);
  const size_t length = lead < 0xC0 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : lead < 0xF8 ? 4 : 1;
  return std::min(length, s.size() - at);
}

size_t skip_spaces(std::string_view s, size_t at) {
  while (at < s.size() && is_space(s[at])) ++at;
  return at;
}

struct Piece {
  std::string text;
  size_t end;  // index just past it in the source
};

// The delimiter after `\left` / `\right` (whitespace before it skipped): a command, a backslash and
// one non-letter, or one character. None when only whitespace, a control space or nothing follows.
std::optional<Piece> read_delimiter(std::string_view s, size_t at) {
  at = skip_spaces(s, at);
  if (at == s.size()) return std::nullopt;
  if (s[at] != '\\') {
    const size_t n = code_point_length(s, at);
    return Piece{std::string(s.substr(at, n)), at + n};
  }
  if (at + 1 == s.size() || is_space(s[at + 1])) return std::nullopt;
  size_t end = at + 1;
  if (is_letter(s[end])) {
    while (end < s.size() && is_letter(s[end])) ++end;
  } else {
    end += code_point_length(s, end);
  }
  return Piece{std::string(s.substr(at, end - at)), end};
}

// `{name}` after `\begin` / `\end`, whitespace anywhere in it skipped; name: letters and `*`.
std::optional<Piece> read_environment(std::string_view s, size_t at) {
  at = skip_spaces(s, at);
  if (at == s.size() || s[at] != '{') return std::nullopt;
  const size_t name_begin = skip_spaces(s, at + 1);
  size_t name_end = name_begin;
  while (name_end < s.size() && (is_letter(s[name_end]) || s[name_end] == '*')) ++name_end;
  const size_t close = skip_spaces(s, name_end);
  if (name_end == name_begin || close == s.size() || s[close] != '}') return std::nullopt;
  return Piece{"{" + std::string(s.substr(name_begin, name_end - name_begin)) + "}", close + 1};
}

}  // namespace

std::vector<std::string> tokenize_latex(std::string_view s) {
  std::vector<std::string> tokens;
  size_t at = 0;
  while (at < s.size()) {
    if (is_space(s[at])) {
      ++at;
    } else if (s[at] != '\\') {
      const size_t n = code_point_length(s, at);
      tokens.emplace_back(s.substr(at, n));
      at += n;
    } else if (at + 1 == s.size() || is_space(s[at + 1])) {
      tokens.emplace_back("\\");  // control space, or a trailing backslash
      ++at;
    } else if (!is_letter(s[at + 1])) {
      const size_t n = 1 + code_point_length(s, at + 1);
      tokens.emplace_back(s.substr(at, n));
      at += n;
    } else {
      size_t end = at + 1;
      while (end < s.size() && is_letter(s[end])) ++end;
      std::string command(s.substr(at, end - at));
      std::optional<Piece> attached;
      if (command == "\\left" || command == "\\right") attached = read_delimiter(s, end);
      if (command == "\\begin" || command == "\\end") attached = read_environment(s, end);
      if (attached) {
        command += attached->text;
        end = attached->end;
      }
      tokens.push_back(std::move(command));
      at = end;
    }
  }
  return tokens;
}

int64_t token_edit_distance(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  // Two rows of the dynamic programme: previous[j] = distance(a[0, i-1), b[0, j)).
  std::vector<int64_t> previous(b.size() + 1), current(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) previous[j] = static_cast<int64_t>(j);
  for (size_t i = 1; i <= a.size(); ++i) {
    current[0] = static_cast<int64_t>(i);
    for (size_t j = 1; j <= b.size(); ++j) {
      current[j] = std::min(
          {previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] != b[j - 1] ? 1 : 0)});
    }
    std::swap(previous, current);
  }
  return previous[b.size()];
}

namespace {

// n-gram -> count; tokens hold no whitespace, so joining them with a space is unambiguous.
std::unordered_map<std::string, int64_t> ngram_counts(const std::vector<std::string>& tokens,
                                                      size_t n) {
  std::unordered_map<std::string, int64_t> counts;
  for (size_t i = 0; i + n <= tokens.size(); ++i) {
    std::string gram = tokens[i];
    for (size_t k = 1; k < n; ++k) gram += ' ' + tokens[i + k];
    ++counts[gram];
  }
  return counts;
}

}  // namespace

double corpus_bleu4(const std::vector<std::vector<std::string>>& predictions,
                    const std::vector<std::vector<std::string>>& references) {
  constexpr size_t kOrders = 4;
  int64_t matches[kOrders] = {}, totals[kOrders] = {};
  int64_t prediction_length = 0, reference_length = 0;
  for (size_t s = 0; s < predictions.size(); ++s) {
    prediction_length += static_cast<int64_t>(predictions[s].size());
    reference_length += static_cast<int64_t>(references[s].size());
    for (size_t n = 1; n <= kOrders; ++n) {
      const auto reference = ngram_counts(references[s], n);
      for (const auto& [gram, count] : ngram_counts(predictions[s], n)) {
        const auto found = reference.find(gram);
        if (found != reference.end()) matches[n - 1] += std::min(count, found->second);  // clipped
        totals[n - 1] += count;
      }
    }
  }
  double log_precision = 0;
  for (size_t n = 0; n < kOrders; ++n) {
    if (matches[n] == 0) return 0;  // no smoothing; also covers no predicted n-grams at all
    log_precision +=
        std::log(static_cast<double>(matches[n]) / static_cast<double>(totals[n])) / kOrders;
  }
  const double brevity = prediction_length >= reference_length
                             ? 1.0
                             : std::exp(1.0 - static_cast<double>(reference_length) /
                                                  static_cast<double>(prediction_length));
  return brevity * std::exp(log_precision);
}

absl::StatusOr<LatexMetrics> latex_metrics(const std::vector<std::string>& predictions,
                                           const std::vector<std::string>& references) {
  if (predictions.size() != references.size()) {
    return absl::InvalidArgumentError("latex metrics: " + std::to_string(predictions.size()) +
                                      " predictions but " + std::to_string(references.size()) +
                                      " references");
  }
  if (predictions.empty())
    return absl::InvalidArgumentError("latex metrics: no predictions to score");
  std::vector<std::vector<std::string>> predicted, expected;
  LatexMetrics m;
  m.count = static_cast<int64_t>(predictions.size());
  for (size_t i = 0; i < predictions.size(); ++i) {
    predicted.push_back(tokenize_latex(predictions[i]));
    expected.push_back(tokenize_latex(references[i]));
    const auto& p = predicted.back();
    const auto& r = expected.back();
    if (p == r) m.exact_match += 1;
    const size_t longest = std::max(p.size(), r.size());
    if (longest > 0)
      m.normalized_edit_distance +=
          static_cast<double>(token_edit_distance(p, r)) / static_cast<double>(longest);
  }
  m.exact_match /= static_cast<double>(m.count);
  m.normalized_edit_distance /= static_cast<double>(m.count);
  m.bleu4 = corpus_bleu4(predicted, expected);
  return m;
}

}  // namespace cpm::core::train
