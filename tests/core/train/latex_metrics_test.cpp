// SPDX-License-Identifier: Apache-2.0
#include "train/latex_metrics.h"

#include <gtest/gtest.h>

#include <fstream>

#include "nlohmann/json.hpp"

namespace cpm::core::train {
namespace {

using Tokens = std::vector<std::string>;

// An independent Python implementation on real validation labels with perturbed predictions
// (tests/core/train/make_metrics_goldens.py).
const nlohmann::json& goldens() {
  static const nlohmann::json* g = [] {
    std::ifstream in(CPM_TEST_SOURCE_DIR "/tests/data/train/latex_metrics_goldens.json");
    return new nlohmann::json(nlohmann::json::parse(in));
  }();
  return *g;
}

TEST(TokenizeLatex, WhitespaceIsInsignificant) {
  EXPECT_EQ(tokenize_latex(R"(\frac{1}{2})"), (Tokens{"\\frac", "{", "1", "}", "{", "2", "}"}));
  EXPECT_EQ(tokenize_latex(R"(\frac{1}{2})"), tokenize_latex(" \\frac { 1 }\t{ 2 }\n"));
  EXPECT_EQ(tokenize_latex(R"(\mathrm{arc})"), tokenize_latex(R"(\mathrm { a r c })"));
  EXPECT_EQ(tokenize_latex(R"(\mathrm{arc})"), (Tokens{"\\mathrm", "{", "a", "r", "c", "}"}));
  EXPECT_EQ(tokenize_latex(R"(a\\b \{ \, x^2_i)"),
            (Tokens{"a", "\\\\", "b", "\\{", "\\,", "x", "^", "2", "_", "i"}));
  EXPECT_TRUE(tokenize_latex(" \t\n").empty());
}

TEST(TokenizeLatex, MatchesTheReferenceTokenizer) {
  for (const auto& c : goldens()["tokenizer_cases"]) {
    EXPECT_EQ(tokenize_latex(c["latex"].get<std::string>()), c["tokens"].get<Tokens>())
        << c["latex"];
  }
  int split_equal = 0;
  for (const auto& p : goldens()["pairs"]) {
    EXPECT_EQ(tokenize_latex(p["prediction"].get<std::string>()),
              p["prediction_tokens"].get<Tokens>())
        << p["prediction"];
    EXPECT_EQ(tokenize_latex(p["reference"].get<std::string>()),
              p["reference_tokens"].get<Tokens>())
        << p["reference"];
    split_equal += p["reference_split_equal"].get<bool>() ? 1 : 0;
  }
  // The labels' own space-separated tokens are ours.
  EXPECT_EQ(split_equal, static_cast<int>(goldens()["pairs"].size()));
}

TEST(TokenEditDistance, MatchesTheReference) {
  EXPECT_EQ(token_edit_distance({}, {}), 0);
  EXPECT_EQ(token_edit_distance({"a", "b"}, {}), 2);
  EXPECT_EQ(token_edit_distance({"k", "i", "t"}, {"s", "i", "t", "s"}), 2);
  for (const auto& p : goldens()["pairs"]) {
    EXPECT_EQ(token_edit_distance(p["prediction_tokens"].get<Tokens>(),
                                  p["reference_tokens"].get<Tokens>()),
              p["edit_distance"].get<int64_t>())
        << p["kind"];
  }
}

TEST(CorpusBleu4, EdgeCases) {
  const Tokens sentence = {"a", "b", "c", "d", "e"};
  EXPECT_DOUBLE_EQ(corpus_bleu4({sentence}, {sentence}), 1.0);
  // No 4-gram in common: 0 without smoothing, even though lower orders match.
  EXPECT_EQ(corpus_bleu4({{"a", "b", "c", "x", "e"}}, {sentence}), 0.0);
  EXPECT_EQ(corpus_bleu4({{}}, {sentence}), 0.0);
  EXPECT_EQ(corpus_bleu4({}, {}), 0.0);
  // A prefix: every n-gram matches, the brevity penalty alone lowers it.
  EXPECT_NEAR(corpus_bleu4({{"a", "b", "c", "d"}}, {sentence}), std::exp(1.0 - 5.0 / 4.0), 1e-15);
}

void expect_corpus(const nlohmann::json& c, const std::vector<std::string>& predictions,
                   const std::vector<std::string>& references) {
  const auto m = latex_metrics(predictions, references);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->count, c["count"].get<int64_t>()) << c["name"];
  EXPECT_NEAR(m->exact_match, c["exact_match"].get<double>(), 1e-12) << c["name"];
  EXPECT_NEAR(m->normalized_edit_distance, c["normalized_edit_distance"].get<double>(), 1e-12)
      << c["name"];
  EXPECT_NEAR(m->bleu4, c["bleu4"].get<double>(), 1e-12) << c["name"];
}

// Every corpus of the fixture: all 43 pairs, each kind of perturbation alone, and hand-made ones
// (no 4-gram match, brevity penalty, a longer prediction).
TEST(LatexMetrics, MatchTheReferenceOnPerturbedLabels) {
  const auto& pairs = goldens()["pairs"];
  ASSERT_EQ(pairs.size(), 43u);
  for (const auto& c : goldens()["corpora"]) {
    std::vector<std::string> predictions, references;
    for (const size_t i : c["indices"].get<std::vector<size_t>>()) {
      predictions.push_back(pairs[i]["prediction"]);
      references.push_back(pairs[i]["reference"]);
    }
    expect_corpus(c, predictions, references);
  }
  for (const auto& c : goldens()["hand_corpora"]) {
    std::vector<std::string> predictions, references;
    for (const auto& p : c["pairs"]) {
      predictions.push_back(p[0]);
      references.push_back(p[1]);
    }
    expect_corpus(c, predictions, references);
  }
  // Pin the headline numbers so a regenerated fixture that changed them is noticed.
  const auto& all = goldens()["corpora"][0];
  EXPECT_EQ(all["name"], "all");
  EXPECT_NEAR(all["bleu4"].get<double>(), 0.8636, 1e-4);
}

TEST(LatexMetrics, RespacedPredictionsAreExactMatches) {
  const auto m = latex_metrics({R"(\frac{1}{2}+\left(x\right))", ""},
                               {R"(\frac { 1 } { 2 } + \left( x \right))", ""});
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->exact_match, 1.0);
  EXPECT_EQ(m->normalized_edit_distance, 0.0);
}

TEST(LatexMetrics, RejectsMismatchedOrEmptyInput) {
  const auto mismatched = latex_metrics({"a", "b"}, {"a"});
  EXPECT_EQ(mismatched.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(mismatched.status().message().find("2 predictions but 1 references"),
            std::string::npos);
  EXPECT_EQ(latex_metrics({}, {}).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace cpm::core::train
