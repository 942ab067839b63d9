// SPDX-License-Identifier: Apache-2.0
//
// Folders on the daemon host that paths from clients must stay inside: adapter_roots (LoadAdapter
// paths) and dataset_roots (JobSpec.dataset_path). A path is resolved as the daemon would open it
// (symlinks in its existing part followed, '.' and '..' normalised) before it is checked, so
// neither a symlink nor '..' leads out.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace cpm::server {

// Immutable after create(); thread-safe.
class PathRoots {
 public:
  // What the paths are, for the errors.
  struct Use {
    std::string subject;       // "adapter path", "spec.dataset_path"
    std::string what;          // "adapter", "dataset": "... outside the adapter roots"
    std::string config_key;    // "adapter_roots"
    std::string outside_hint;  // what to do instead: "copy the adapter under one of them ..."
    bool directory = true;     // paths name folders (else regular files)
    std::string kind_hint;     // after "is not a directory"/"is not a file": "(a PEFT adapter folder)"
  };

  // The roots with symlinks resolved. FAILED_PRECONDITION naming one that is not a directory.
  static absl::StatusOr<PathRoots> create(const std::vector<std::string>& roots, Use use);

  // A client's path (absolute, or relative to the first root), resolved. INVALID_ARGUMENT when it
  // is empty or not a directory / regular file as `use` says; PERMISSION_DENIED when it is not
  // inside a root (also with no roots at all); NOT_FOUND when a file path inside a root does not
  // exist.
  absl::StatusOr<std::string> resolve(const std::string& path) const;

  const std::vector<std::string>& roots() const { return roots_; }

 private:
  PathRoots(std::vector<std::string> roots, Use use) : roots_(std::move(roots)), use_(std::move(use)) {}
  std::vector<std::string> roots_;
  Use use_;
};

}  // namespace cpm::server
