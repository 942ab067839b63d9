// SPDX-License-Identifier: Apache-2.0
#include "dataset_check.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "train/conversation_format.h"

namespace cpmctl {
namespace {

// The signatures of the formats the daemon decodes.
bool looks_like_an_image(std::string_view head) {
  auto starts = [&](std::string_view magic) { return head.substr(0, magic.size()) == magic; };
  return starts("\x89PNG\r\n\x1a\n") || starts("\xFF\xD8\xFF") || starts("BM") ||
         starts(std::string_view("II*\0", 4)) || starts(std::string_view("MM\0*", 4)) ||
         (starts("RIFF") && head.size() >= 12 && head.substr(8, 4) == "WEBP");
}

}  // namespace

absl::Status check_image_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int error = errno;
    if (error == ENOENT) return absl::InvalidArgumentError(absl::StrCat("missing image ", path));
    return absl::InvalidArgumentError(
        absl::StrCat("unreadable image ", path, ": ", std::strerror(error)));
  }
  char head[16] = {};
  in.read(head, sizeof head);
  const std::string_view bytes(head, static_cast<size_t>(in.gcount()));
  if (bytes.empty()) return absl::InvalidArgumentError(absl::StrCat("unreadable image ", path, ": empty file"));
  if (!looks_like_an_image(bytes)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unreadable image ", path, ": not a PNG, JPEG, WebP, BMP or TIFF file"));
  }
  return absl::OkStatus();
}

absl::StatusOr<CheckedDataset> check_dataset(const std::string& path,
                                             const train::ReadOptions& options) {
  auto file = train::read_dataset(path, options);
  if (!file.ok()) return file.status();
  CheckedDataset out;
  out.bad = std::move(file->bad);
  out.num_records = static_cast<int64_t>(file->records.size() + out.bad.size());
  std::vector<train::DatasetRecord> good;
  for (train::DatasetRecord& record : file->records) {
    absl::Status status = train::check_conversation_format(record.conversation);
    for (const auto& image : record.conversation.images) {
      if (!status.ok()) break;
      status = check_image_file(image.path);
    }
    if (status.ok()) {
      good.push_back(std::move(record));
    } else {
      out.bad.push_back({record.number, std::string(status.message())});
    }
  }
  std::stable_sort(out.bad.begin(), out.bad.end(),
                   [](const auto& a, const auto& b) { return a.number < b.number; });
  file->records = std::move(good);
  out.file = std::move(*file);
  return out;
}

std::string CheckedDataset::describe() const {
  std::string text = absl::StrCat(file.path, ": ", bad.size(), " of ", num_records,
                                  num_records == 1 ? " record has" : " records have", " problems");
  for (const auto& b : bad) absl::StrAppend(&text, "\n  ", where(b.number), ": ", b.reason);
  return text;
}

}  // namespace cpmctl
