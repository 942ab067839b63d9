// SPDX-License-Identifier: Apache-2.0
//
// `cpmctl ocr`: images in, LaTeX out, through cpm.v1.Ocr.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "connection.h"

namespace cpmctl {

struct OcrOptions {
  std::vector<std::string> inputs;  // files, one directory, or "-" (stdin)
  std::string adapter;              // empty: the base model
  std::optional<std::string> prompt;
  std::optional<int32_t> max_new_tokens;
  bool sample = false;  // temperature / top-k / top-p sampling instead of greedy
  std::optional<double> temperature;
  std::optional<int32_t> top_k;
  std::optional<double> top_p;
  std::optional<uint64_t> seed;
  std::optional<int32_t> num_beams;  // beam search when set
  std::optional<double> repetition_penalty;
  bool stream = false;  // print text as it is produced (one image only)
  int concurrency = 1;  // requests in flight
  std::string eval_labels;  // image_path,text CSV: report metrics instead of the text
};

// Adds the `ocr` subcommand with its flags bound to `options`.
CLI::App* add_ocr_command(CLI::App& app, OcrOptions& options);

int run_ocr(const GlobalOptions& global, const OcrOptions& options);

}  // namespace cpmctl
