// SPDX-License-Identifier: Apache-2.0
//
// Adapter folders on the daemon host: where LoadAdapter may read them from (the configured
// adapter roots; paths from clients never leave them) and which files ExportAdapter sends.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "path_roots.h"

namespace cpm::server {

// How LoadAdapter paths are confined to `roots` (adapter_roots).
absl::StatusOr<PathRoots> adapter_path_roots(const std::vector<std::string>& roots);

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
