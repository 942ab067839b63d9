// SPDX-License-Identifier: Apache-2.0
//
// Whole-file reads for the LibTorch-free part of core (cpm_portable), which cpmctl links too.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace cpm::core {

// The file's bytes. NOT_FOUND when it does not exist, UNAVAILABLE when it exists but cannot be
// read (permissions, a directory); both messages name the file.
absl::StatusOr<std::string> read_whole_file(const std::string& path);

}  // namespace cpm::core
