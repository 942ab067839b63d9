// SPDX-License-Identifier: Apache-2.0
#include "common/build_info.h"

#include "common/torch_compat.h"

namespace cpm::core {

// Defined in the generated version.cpp.
extern const char* const kVersion;
extern const char* const kGitCommit;

const BuildInfo& build_info() {
  static const BuildInfo info{
      .version = kVersion,
      .git_commit = kGitCommit,
      .torch_version = compat::kTorchVersion,
#ifdef CPM_WITH_CUDA
      .cuda = true,
#else
      .cuda = false,
#endif
#ifdef CPM_WITH_OPENCV
      .image_decoder = "opencv",
#else
      .image_decoder = "libpng+libjpeg",
#endif
  };
  return info;
}

}  // namespace cpm::core
