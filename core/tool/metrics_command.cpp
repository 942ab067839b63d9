// SPDX-License-Identifier: Apache-2.0
//
// cpm-tool metrics: LaTeX OCR metrics (exact match, normalized edit distance, BLEU-4 over LaTeX
// tokens) of a predictions file against a references file, one LaTeX string per line.
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "commands.h"
#include "nlohmann/json.hpp"
#include "train/latex_metrics.h"

namespace cpm::tool {
namespace {

// Every line of `path` (a final newline ends the last line, it does not start an empty one; a
// trailing '\r' is dropped).
absl::StatusOr<std::vector<std::string>> read_lines(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(path + ": cannot open");
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(std::move(line));
  }
  if (in.bad()) return absl::DataLossError(path + ": read error");
  return lines;
}

int run(const std::string& pred_path, const std::string& ref_path) {
  auto predictions = read_lines(pred_path);
  if (!predictions.ok()) return fail(predictions.status());
  auto references = read_lines(ref_path);
  if (!references.ok()) return fail(references.status());
  if (predictions->size() != references->size()) {
    return fail(pred_path + " has " + std::to_string(predictions->size()) + " lines but " +
                ref_path + " has " + std::to_string(references->size()) +
                "; one prediction per reference line");
  }
  const auto metrics = core::train::latex_metrics(*predictions, *references);
  if (!metrics.ok()) return fail(metrics.status());
  const nlohmann::json out = {{"count", metrics->count},
                              {"exact_match", metrics->exact_match},
                              {"normalized_edit_distance", metrics->normalized_edit_distance},
                              {"bleu4", metrics->bleu4}};
  std::printf("%s\n", out.dump().c_str());
  return 0;
}

}  // namespace

void add_metrics_command(CLI::App& app, int& exit_code) {
  static std::string pred, ref;
  CLI::App* cmd = app.add_subcommand(
      "metrics",
      "LaTeX OCR metrics of predictions against references (JSON: count, exact_match, "
      "normalized_edit_distance, bleu4)");
  cmd->add_option("--pred", pred, "predictions, one LaTeX string per line")->required();
  cmd->add_option("--ref", ref, "references, one LaTeX string per line (as many lines)")
      ->required();
  cmd->footer(
      "Both sides are tokenized alike (commands, escaped symbols, single characters; whitespace "
      "ignored). normalized_edit_distance: token Levenshtein / max(length), averaged over lines (0 "
      "is best). bleu4: corpus BLEU-4, no smoothing (sacrebleu smooth_method=none).\n"
      "Example: cpm-tool metrics --pred predictions.txt --ref labels.txt");
  cmd->callback([&exit_code] { exit_code = run(pred, ref); });
}

}  // namespace cpm::tool
