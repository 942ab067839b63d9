// SPDX-License-Identifier: Apache-2.0
//
// Files and folders that appear whole or not at all: contents go to a temporary sibling, are
// fsynced and then renamed into place, so a crash never leaves a half-written file (a reader sees
// the old version or the new one).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace cpm::core::io {

// Writes the concatenation of `pieces` to `path` atomically. UNAVAILABLE naming the path on failure.
absl::Status write_file_atomic(const std::string& path,
                               const std::vector<std::pair<const void*, size_t>>& pieces);
absl::Status write_file_atomic(const std::string& path, std::string_view content);

// A fresh, empty staging folder beside `dir` (".<name>.tmp.<pid>.<n>") to fill before
// publish_directory; any leftover of an earlier crash with the same name is removed first.
absl::StatusOr<std::string> staging_directory(const std::string& dir);
// Removes what writes interrupted by a crash left directly in `dir` (".<name>.tmp.<pid>.<n>" files
// and folders of the functions above). Only when nothing else writes there (the daemon holds its
// data-dir lock). Returns how many entries went.
int remove_stale_staging(const std::string& dir);
// Renames the filled `staged` folder to `dir` (which must not exist) and makes it durable.
absl::Status publish_directory(const std::string& staged, const std::string& dir);

}  // namespace cpm::core::io
