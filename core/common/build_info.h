// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <string>

namespace cpm::core {

// What this binary was built from and against.
struct BuildInfo {
  std::string version;        // cpmd's semantic version ("0.1.0")
  std::string git_commit;     // short hash, "unknown" outside a git checkout
  std::string torch_version;  // LibTorch ("1.13.0")
  bool cuda = false;          // built against a CUDA LibTorch
  std::string image_decoder;  // "opencv" or "libpng+libjpeg"
};

const BuildInfo& build_info();

}  // namespace cpm::core
