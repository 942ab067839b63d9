// SPDX-License-Identifier: Apache-2.0
//
// `cpmctl dataset prepare`: the LaTeX-OCR recipe's `image_path,text` CSV -> the OpenBMB recipe's
// conversation JSON, split into train.json and eval.json by the daemon's own seeded split
// (train/dataset_file.h eval_indices). Each record is
//   {"id": "7", "image": "images/7.png",
//    "conversations": [{"role": "user", "content": "<image>\n<question>"},
//                      {"role": "assistant", "content": "<the LaTeX>"}]}
// with the image path relative to the output folder, which is where the daemon resolves it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "train/dataset_file.h"

namespace cpmctl {

struct PrepareOptions {
  std::string labels_csv;
  std::string out_dir;
  // At most one; neither: the daemon's default (5%, at most 500).
  std::optional<int64_t> eval_size;
  std::optional<double> eval_fraction;
  int64_t seed = 42;  // of the split
  std::string prompt = std::string(cpm::core::train::kDefaultCsvPrompt);
  // Images outside the output folder are copied into it (keeping their path below the CSV's
  // folder) instead of refused.
  bool copy_images = false;
  // Leave bad records out instead of failing with the list.
  bool skip_bad_records = false;
};

struct PrepareResult {
  std::string train_json, eval_json;
  int64_t train_records = 0, eval_records = 0;
  int64_t copied_images = 0;
  std::vector<std::string> skipped;  // "line 3: missing image ..." per record left out
};

// INVALID_ARGUMENT for problems in the data: bad records (every one listed; unless
// skip_bad_records). FAILED_PRECONDITION for options that do not fit it: images outside the output
// folder (unless copy_images), an eval split that leaves nothing to train on. NOT_FOUND /
// UNAVAILABLE for files it cannot read or write. Nothing is written unless every record is usable
// or skipped.
absl::StatusOr<PrepareResult> prepare_dataset(const PrepareOptions& options);

}  // namespace cpmctl
