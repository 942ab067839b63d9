// SPDX-License-Identifier: Apache-2.0
//
// Fine-tuning datasets checked the way training will use them (train/dataset_file.h parses them:
// formats, record numbering, the split), and the daemon's submission policy for bad records.
//
// Thread-safe: free functions over values.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "train/conversation.h"
#include "train/dataset_file.h"

namespace cpm::core::train {

// Every record checked the way training will use it: roles, answers, image references, the images
// themselves (they must exist and decode) and the length after tokenization.
struct ValidationReport {
  std::string path;
  RecordNumbering numbering = RecordNumbering::kLine;
  int64_t num_records = 0;              // good + bad
  std::vector<DatasetRecord> good;      // in file order
  std::vector<BadRecord> bad;           // every problem found, in file order

  // "line 12" / "index 3".
  std::string where(int64_t number) const;
  // One line per bad record, at most `max_listed`, then how many more; with the totals first.
  std::string describe(size_t max_listed = 20) const;
};
ValidationReport validate_dataset(DatasetFile file, const ExampleBuilder& builder);

// The submission policy. With bad records and !skip_bad_records: INVALID_ARGUMENT whose message is
// describe(max_listed) (every bad record up to the cap, and the total). With skip_bad_records the
// bad ones are left out; INVALID_ARGUMENT only when no good record remains.
absl::Status check_bad_records(const ValidationReport& report, bool skip_bad_records,
                               size_t max_listed = 20);

// A job's data options (cpm.v1.DataOptions without the proto); model_max_length and
// max_slice_nums live in the ExampleBuilder's options.
struct DataOptions {
  ReadOptions read;
  SplitOptions split;
  // Skip and count bad records (true) or fail with the list (false). Default: false.
  bool skip_bad_records = false;
};

struct LoadedDataset {
  DatasetSplit split;
  std::vector<BadRecord> skipped;  // the bad records left out (skip_bad_records)
  RecordNumbering numbering = RecordNumbering::kLine;
  int64_t num_records = 0;
};

// read_dataset + validate_dataset + check_bad_records + split_dataset.
absl::StatusOr<LoadedDataset> load_dataset(const std::string& path, const ExampleBuilder& builder,
                                           const DataOptions& options);

}  // namespace cpm::core::train
