// SPDX-License-Identifier: Apache-2.0
#include "path_roots.h"

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

absl::StatusOr<PathRoots> PathRoots::create(const std::vector<std::string>& roots, Use use) {
  std::vector<std::string> resolved;
  for (const std::string& root : roots) {
    std::error_code ec;
    const fs::path canonical = fs::canonical(root, ec);
    if (ec || !fs::is_directory(canonical, ec)) {
      return absl::FailedPreconditionError(absl::StrCat(use.what, " root ", root, " is not a directory",
                                                        ec ? absl::StrCat(" (", ec.message(), ")") : "",
                                                        "; create it or fix ", use.config_key));
    }
    resolved.push_back(canonical.string());
  }
  return PathRoots(std::move(resolved), std::move(use));
}

absl::StatusOr<std::string> PathRoots::resolve(const std::string& path) const {
  if (path.empty()) return absl::InvalidArgumentError(absl::StrCat(use_.subject, " is empty"));
  fs::path requested(path);
  if (requested.is_relative()) {
    if (roots_.empty()) {
      return absl::PermissionDeniedError(
          absl::StrCat("this cpmd has no ", use_.config_key, "; ", use_.subject, " cannot be used"));
    }
    requested = fs::path(roots_.front()) / requested;
  }
  std::error_code ec;
  const fs::path resolved = fs::weakly_canonical(requested, ec);
  const bool allowed =
      !ec && std::any_of(roots_.begin(), roots_.end(), [&](const std::string& r) { return inside(resolved, r); });
  if (!allowed) {
    return absl::PermissionDeniedError(absl::StrCat(use_.subject, " ", path, " is outside the ", use_.what,
                                                    " roots (", absl::StrJoin(roots_, ", "), "); ",
                                                    use_.outside_hint));
  }
  if (!use_.directory && !fs::exists(resolved, ec)) {
    return absl::NotFoundError(absl::StrCat(use_.subject, " ", path, " does not exist (paths are on the daemon host, ",
                                            "relative to ", roots_.front(), ")"));
  }
  if (use_.directory ? !fs::is_directory(resolved, ec) : !fs::is_regular_file(resolved, ec)) {
    return absl::InvalidArgumentError(absl::StrCat(use_.subject, " ", path, " is not a ",
                                                   use_.directory ? "directory" : "file", use_.kind_hint));
  }
  return resolved.string();
}

}  // namespace cpm::server
