// SPDX-License-Identifier: Apache-2.0
#include "io/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <regex>
#include <system_error>

#include "absl/strings/str_cat.h"

namespace cpm::core::io {
namespace fs = std::filesystem;
namespace {

void fsync_folder(const fs::path& folder) {
  const int dir = ::open(folder.empty() ? "." : folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
}

std::string unique_suffix() {
  static std::atomic<uint64_t> counter{0};
  return absl::StrCat(".tmp.", ::getpid(), ".", counter++);
}

}  // namespace

absl::Status write_file_atomic(const std::string& path,
                               const std::vector<std::pair<const void*, size_t>>& pieces) {
  const fs::path target(path);
  const fs::path tmp = target.parent_path() / absl::StrCat(".", target.filename().string(), unique_suffix());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat(path, ": cannot create ", tmp.string(), ": ",
                                               std::strerror(errno)));
  }
  bool ok = true;
  for (const auto& [data, size] : pieces) {
    const char* c = static_cast<const char*>(data);
    size_t n = size;
    while (ok && n > 0) {
      const ssize_t w = ::write(fd, c, n);
      if (w < 0 && errno == EINTR) continue;
      ok = w > 0;
      if (ok) {
        c += w;
        n -= static_cast<size_t>(w);
      }
    }
  }
  ok = ok && ::fsync(fd) == 0;
  const int err = errno;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), target.c_str()) != 0) {
    const int e = ok ? errno : err;
    ::unlink(tmp.c_str());
    return absl::UnavailableError(absl::StrCat(path, ": write failed: ", std::strerror(e)));
  }
  fsync_folder(target.parent_path());
  return absl::OkStatus();
}

absl::Status write_file_atomic(const std::string& path, std::string_view content) {
  return write_file_atomic(path, {{content.data(), content.size()}});
}

absl::StatusOr<std::string> staging_directory(const std::string& dir) {
  const fs::path target(dir);
  const fs::path staged = target.parent_path() / absl::StrCat(".", target.filename().string(), unique_suffix());
  std::error_code ec;
  fs::remove_all(staged, ec);
  fs::create_directories(staged, ec);
  if (ec) return absl::UnavailableError(absl::StrCat(dir, ": cannot create ", staged.string(), ": ", ec.message()));
  return staged.string();
}

int remove_stale_staging(const std::string& dir) {
  static const std::regex staging(R"(\..+\.tmp\.\d+\.\d+)");
  int removed = 0;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (!std::regex_match(entry.path().filename().string(), staging)) continue;
    std::error_code rm;
    fs::remove_all(entry.path(), rm);
    if (!rm) ++removed;
  }
  return removed;
}

absl::Status publish_directory(const std::string& staged, const std::string& dir) {
  std::error_code ec;
  if (fs::exists(dir, ec)) return absl::AlreadyExistsError(absl::StrCat(dir, " already exists"));
  for (const auto& entry : fs::directory_iterator(staged, ec)) {
    const int fd = ::open(entry.path().c_str(), O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      ::fsync(fd);
      ::close(fd);
    }
  }
  fsync_folder(staged);
  if (::rename(staged.c_str(), dir.c_str()) != 0) {
    return absl::UnavailableError(absl::StrCat(dir, ": cannot rename ", staged, " into place: ", std::strerror(errno)));
  }
  fsync_folder(fs::path(dir).parent_path());
  return absl::OkStatus();
}

}  // namespace cpm::core::io
