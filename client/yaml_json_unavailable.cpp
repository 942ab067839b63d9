// SPDX-License-Identifier: Apache-2.0
// yaml_json.h for builds without yaml-cpp (hosts that lack libyaml-cpp-dev).
#include "yaml_json.h"

namespace cpmctl {

absl::StatusOr<std::string> yaml_to_json(const std::string&) {
  return absl::FailedPreconditionError(
      "this cpmctl was built without yaml-cpp (libyaml-cpp-dev); write the config as JSON");
}

}  // namespace cpmctl
