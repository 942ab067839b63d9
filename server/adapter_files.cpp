// SPDX-License-Identifier: Apache-2.0
#include "adapter_files.h"

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace cpm::server {
namespace {

namespace fs = std::filesystem;

// `path` equals `root` or lies below it; both canonical.
bool inside(const fs::path& path, const fs::path& root) {
  const fs::path rel = path.lexically_relative(root);
  return !rel.empty() && *rel.begin() != "..";
}

}  // namespace

absl::StatusOr<AdapterRoots> AdapterRoots::create(const std::vector<std::string>& roots) {
  std::vector<std::string> resolved;
  for (const std::string& root : roots) {
    std::error_code ec;
    const fs::path canonical = fs::canonical(root, ec);
    if (ec || !fs::is_directory(canonical, ec)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "adapter root ", root, " is not a directory",
          ec ? absl::StrCat(" (", ec.message(), ")") : "", "; create it or fix adapter_roots"));
    }
    resolved.push_back(canonical.string());
  }
  return AdapterRoots(std::move(resolved));
}

absl::StatusOr<std::string> AdapterRoots::resolve(const std::string& path) const {
  if (path.empty()) return absl::InvalidArgumentError("adapter path is empty");
  fs::path requested(path);
  if (requested.is_relative()) {
    if (roots_.empty()) {
      return absl::PermissionDeniedError(
          "this cpmd has no adapter roots; LoadAdapter takes no path");
    }
    requested = fs::path(roots_.front()) / requested;
  }
  // Symlinks in the existing part resolved, the rest normalised: what the engine would open.
  std::error_code ec;
  const fs::path resolved = fs::weakly_canonical(requested, ec);
  const bool allowed = !ec && std::any_of(roots_.begin(), roots_.end(), [&](const std::string& r) {
    return inside(resolved, r);
  });
  if (!allowed) {
    return absl::PermissionDeniedError(absl::StrCat(
        "adapter path ", path, " is outside the adapter roots (", absl::StrJoin(roots_, ", "),
        "); copy the adapter under one of them or add its folder to adapter_roots"));
  }
  if (!fs::is_directory(resolved, ec)) {
    return absl::InvalidArgumentError(
        absl::StrCat("adapter path ", path, " is not a directory (a PEFT adapter folder)"));
  }
  return resolved.string();
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
