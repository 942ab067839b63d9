// SPDX-License-Identifier: Apache-2.0
//
// YAML -> JSON text, for `cpmctl train --config spec.yaml`. Plain scalars become JSON numbers,
// booleans (true/false, yes/no, on/off) or null (~, null) when they read as such, else strings;
// quoted scalars stay strings. Built on yaml-cpp; a cpmctl built without it refuses YAML with a
// message saying so.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace cpmctl {

// INVALID_ARGUMENT with yaml-cpp's line and column for malformed YAML.
absl::StatusOr<std::string> yaml_to_json(const std::string& yaml);

}  // namespace cpmctl
