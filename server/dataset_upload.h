// SPDX-License-Identifier: Apache-2.0
//
// UploadDataset: a client streams a manifest (every file with its size and SHA-256) and then the
// files' bytes; the daemon writes them into a staging folder beside <data_dir>/datasets/<id>,
// checks every size and checksum, validates the dataset's records the way training reads them,
// and only then publishes the folder (one rename) and stores the dataset. A stream that breaks
// off, lies about a file, or carries no usable record leaves nothing behind.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "cpm/v1/training.pb.h"

namespace cpm::server {

class JobStore;
class ModelHost;

struct UploadLimits {
  int64_t max_files = 1000000;
  int64_t max_total_bytes = int64_t{64} << 30;
};

// Validates a client-given relative path (FileInfo / FileChunk rules): '/'-separated, not
// absolute, no empty, "." or ".." component, no NUL or backslash. INVALID_ARGUMENT naming it.
absl::Status check_relative_path(const std::string& path);

// Thread-safe: each call of receive() is independent.
class DatasetUploads {
 public:
  // Removes the staging folders of uploads that a crash interrupted.
  DatasetUploads(JobStore& store, ModelHost& host, std::string datasets_dir, UploadLimits limits = {});

  // Reads the stream through `next` (false once it ends) and stores the dataset. INVALID_ARGUMENT
  // for a bad manifest, a chunk out of order or outside the manifest, a wrong size or checksum, a
  // missing file, or a dataset without a single usable record (the message lists the bad ones);
  // FAILED_PRECONDITION / UNAVAILABLE while there is no model to validate against; CANCELLED when
  // the stream ends early.
  absl::StatusOr<cpm::v1::Dataset> receive(const std::function<bool(cpm::v1::UploadDatasetRequest&)>& next,
                                           const std::function<bool()>& cancelled);
  absl::StatusOr<cpm::v1::ListDatasetsResponse> list(const cpm::v1::ListDatasetsRequest& request);

 private:
  JobStore& store_;
  ModelHost& host_;
  const std::string dir_;
  const UploadLimits limits_;
};

}  // namespace cpm::server
