// SPDX-License-Identifier: Apache-2.0
//
// `cpmctl dataset check`'s rules: a dataset file read by the daemon's own parser and record rules
// (cpm_portable's train/dataset_file.h and train/conversation_format.h), plus the images: each must
// exist, be readable and start like a PNG, JPEG, WebP, BMP or TIFF file. What the daemon checks
// beyond this needs the model (full image decoding, the length after tokenization).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "train/dataset_file.h"

namespace cpmctl {

namespace train = cpm::core::train;

struct CheckedDataset {
  train::DatasetFile file;             // records: the good ones, in file order
  std::vector<train::BadRecord> bad;   // every problem, in file order
  int64_t num_records = 0;             // good + bad

  // "line 3" / "index 2".
  std::string where(int64_t number) const { return train::record_location(file.numbering, number); }
  // "N of M records have problems" and one line per problem (all of them).
  std::string describe() const;
};

// Reads and checks every record. Errors are about the file as a whole (missing, unreadable, not a
// JSON list, a CSV without image_path and text), as read_dataset() reports them.
absl::StatusOr<CheckedDataset> check_dataset(const std::string& path,
                                             const train::ReadOptions& options = {});

// OK, or INVALID_ARGUMENT "missing image P" / "unreadable image P: why", the daemon's wording.
absl::Status check_image_file(const std::string& path);

}  // namespace cpmctl
