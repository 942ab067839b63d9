// SPDX-License-Identifier: Apache-2.0
//
// Training.UploadDataset from a local dataset: the dataset file and every image its records name,
// checked first (dataset_check.h), announced in a manifest with sizes and SHA-256 sums, then sent
// in 1 MiB chunks with a progress line on stderr.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cpm/v1/training.grpc.pb.h"
#include "settings.h"

namespace cpmctl {

struct UploadPlan {
  cpm::v1::DatasetManifest manifest;
  std::vector<std::string> local_paths;  // local_paths[i] is manifest.files(i)
  int64_t total_bytes = 0;
  int64_t num_records = 0;
  std::vector<std::string> skipped;  // bad records left out ("line 3: missing image ...")
};

// The files to send. Bad records fail the plan with the list (INVALID_ARGUMENT), unless
// `skip_bad_records`, which leaves their images out (the daemon skips them too). Paths in the
// manifest are relative to the dataset file's folder, as the records name them.
absl::StatusOr<UploadPlan> plan_upload(const std::string& dataset_file, const std::string& name,
                                       cpm::v1::DatasetFormat format, bool skip_bad_records);

// Sends the plan. `progress` (may be null) gets (bytes sent, total) after each chunk. The
// returned status is the daemon's answer, or the local reason a file could not be read.
grpc::Status upload_dataset(cpm::v1::Training::Stub& stub, const GlobalOptions& global, const UploadPlan& plan,
                            const std::function<void(int64_t, int64_t)>& progress, cpm::v1::Dataset* dataset);

}  // namespace cpmctl
