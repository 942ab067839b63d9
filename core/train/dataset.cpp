// SPDX-License-Identifier: Apache-2.0
#include "train/dataset.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace cpm::core::train {

std::string ValidationReport::where(int64_t number) const {
  return record_location(numbering, number);
}

std::string ValidationReport::describe(size_t max_listed) const {
  std::string out = absl::StrCat(path, ": ", bad.size(), " of ", num_records, " records are bad");
  for (size_t i = 0; i < bad.size() && i < max_listed; ++i) {
    absl::StrAppend(&out, "\n  ", where(bad[i].number), ": ", bad[i].reason);
  }
  if (bad.size() > max_listed) absl::StrAppend(&out, "\n  ... and ", bad.size() - max_listed, " more");
  return out;
}

ValidationReport validate_dataset(DatasetFile file, const ExampleBuilder& builder) {
  ValidationReport report;
  report.path = std::move(file.path);
  report.numbering = file.numbering;
  report.bad = std::move(file.bad);
  report.num_records = static_cast<int64_t>(file.records.size() + report.bad.size());
  for (DatasetRecord& record : file.records) {
    if (absl::Status s = builder.check(record.conversation); !s.ok()) {
      report.bad.push_back({record.number, std::string(s.message())});
    } else {
      report.good.push_back(std::move(record));
    }
  }
  std::stable_sort(report.bad.begin(), report.bad.end(),
                   [](const BadRecord& a, const BadRecord& b) { return a.number < b.number; });
  return report;
}

absl::Status check_bad_records(const ValidationReport& report, bool skip_bad_records,
                               size_t max_listed) {
  if (!report.bad.empty() && !skip_bad_records) {
    return absl::InvalidArgumentError(report.describe(max_listed));
  }
  if (report.good.empty()) {
    return absl::InvalidArgumentError(report.bad.empty()
                                          ? absl::StrCat(report.path, ": the dataset holds no records")
                                          : report.describe(max_listed));
  }
  return absl::OkStatus();
}

absl::StatusOr<LoadedDataset> load_dataset(const std::string& path, const ExampleBuilder& builder,
                                           const DataOptions& options) {
  CPM_ASSIGN_OR_RETURN(DatasetFile file, read_dataset(path, options.read));
  ValidationReport report = validate_dataset(std::move(file), builder);
  CPM_RETURN_IF_ERROR(check_bad_records(report, options.skip_bad_records));
  LoadedDataset loaded;
  loaded.numbering = report.numbering;
  loaded.num_records = report.num_records;
  loaded.skipped = std::move(report.bad);
  CPM_ASSIGN_OR_RETURN(loaded.split, split_dataset(std::move(report.good), options.split));
  return loaded;
}

}  // namespace cpm::core::train
