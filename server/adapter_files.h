// SPDX-License-Identifier: Apache-2.0
//
// Adapter folders on the daemon host: where LoadAdapter may read them from (the configured
// adapter roots; paths from clients never leave them) and which files ExportAdapter sends.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace cpm::server {

// Immutable after create(); thread-safe.
class AdapterRoots {
 public:
  // The roots with symlinks resolved. FAILED_PRECONDITION naming one that is not a directory.
  static absl::StatusOr<AdapterRoots> create(const std::vector<std::string>& roots);

  // A client's folder (absolute, or relative to the first root) with symlinks and '..' resolved.
  // PERMISSION_DENIED when the result is not inside a root; INVALID_ARGUMENT when it is empty or
  // is not a directory.
  absl::StatusOr<std::string> resolve(const std::string& path) const;

  const std::vector<std::string>& roots() const { return roots_; }

 private:
  explicit AdapterRoots(std::vector<std::string> roots) : roots_(std::move(roots)) {}
  std::vector<std::string> roots_;
};

struct AdapterFile {
  std::string name;  // relative to the folder: the FileInfo / FileChunk path
  std::string path;  // on the host
  int64_t size_bytes = 0;
};

// The regular files directly in `dir` (a PEFT folder is flat), by name. Symlinks are left out, so
// an export never sends a file from outside the folder. FAILED_PRECONDITION if `dir` cannot be
// listed.
absl::StatusOr<std::vector<AdapterFile>> list_adapter_files(const std::string& dir);

}  // namespace cpm::server
