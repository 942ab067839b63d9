// SPDX-License-Identifier: Apache-2.0
#include "adapter_files.h"

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace cpm::server {
namespace fs = std::filesystem;

absl::StatusOr<PathRoots> adapter_path_roots(const std::vector<std::string>& roots) {
  return PathRoots::create(roots, {"adapter path", "adapter", "adapter_roots",
                                   "copy the adapter under one of them or add its folder to adapter_roots",
                                   /*directory=*/true, " (a PEFT adapter folder)"});
}

absl::StatusOr<std::vector<AdapterFile>> list_adapter_files(const std::string& dir) {
  std::vector<AdapterFile> files;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (!it->is_regular_file(ec) || it->is_symlink(ec)) continue;
    const auto size = it->file_size(ec);
    if (ec) break;
    files.push_back(
        {it->path().filename().string(), it->path().string(), static_cast<int64_t>(size)});
  }
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("adapter folder ", dir, " cannot be read: ", ec.message()));
  }
  std::sort(files.begin(), files.end(),
            [](const AdapterFile& a, const AdapterFile& b) { return a.name < b.name; });
  return files;
}

}  // namespace cpm::server
