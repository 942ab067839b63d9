// SPDX-License-Identifier: Apache-2.0
#include "dataset_upload.h"

#include <filesystem>
#include <fstream>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/sha256.h"
#include "connection.h"
#include "dataset_check.h"

namespace cpmctl {
namespace {

namespace fs = std::filesystem;

constexpr size_t kChunkBytes = 1 << 20;

train::DatasetFormat core_format(cpm::v1::DatasetFormat format) {
  switch (format) {
    case cpm::v1::DATASET_FORMAT_CSV:
      return train::DatasetFormat::kCsv;
    case cpm::v1::DATASET_FORMAT_CONVERSATION_JSON:
      return train::DatasetFormat::kConversationJson;
    default:
      return train::DatasetFormat::kAuto;
  }
}

absl::Status add_file(const fs::path& local, const std::string& relative, UploadPlan* plan) {
  std::error_code ec;
  const auto size = fs::file_size(local, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot read ", local.string(), ": ", ec.message()));
  auto digest = cpm::core::sha256_file(local.string());
  if (!digest.ok()) return digest.status();
  auto* info = plan->manifest.add_files();
  info->set_path(relative);
  info->set_size_bytes(static_cast<int64_t>(size));
  info->set_sha256(*digest);
  plan->local_paths.push_back(local.string());
  plan->total_bytes += static_cast<int64_t>(size);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<UploadPlan> plan_upload(const std::string& dataset_file, const std::string& name,
                                       cpm::v1::DatasetFormat format, bool skip_bad_records) {
  train::ReadOptions read;
  read.format = core_format(format);
  read.resolve_symlinks = false;  // upload the files under the names the records use
  auto checked = check_dataset(dataset_file, read);
  if (!checked.ok()) return checked.status();
  UploadPlan plan;
  if (!checked->bad.empty()) {
    if (!skip_bad_records) {
      return absl::InvalidArgumentError(absl::StrCat(
          checked->describe(), "\nfix them (cpmctl dataset check), or pass --skip-bad-records"));
    }
    for (const auto& b : checked->bad) plan.skipped.push_back(absl::StrCat(checked->where(b.number), ": ", b.reason));
  }
  if (checked->file.records.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(dataset_file, " has no usable record"));
  }
  plan.num_records = static_cast<int64_t>(checked->file.records.size());
  const fs::path root = fs::weakly_canonical(fs::absolute(dataset_file).parent_path());
  const std::string file_name = fs::path(dataset_file).filename().string();
  plan.manifest.set_name(name.empty() ? file_name : name);
  plan.manifest.set_format(format);
  plan.manifest.set_dataset_file(file_name);
  if (absl::Status s = add_file(dataset_file, file_name, &plan); !s.ok()) return s;
  std::set<std::string> seen = {file_name};
  for (const auto& record : checked->file.records) {
    for (const auto& image : record.conversation.images) {
      const std::string relative = fs::path(image.path).lexically_relative(root).generic_string();
      if (!seen.insert(relative).second) continue;
      if (absl::Status s = add_file(image.path, relative, &plan); !s.ok()) return s;
    }
  }
  return plan;
}

grpc::Status upload_dataset(cpm::v1::Training::Stub& stub, const GlobalOptions& global, const UploadPlan& plan,
                            const std::function<void(int64_t, int64_t)>& progress, cpm::v1::Dataset* dataset) {
  auto context = make_stream_context(global);
  auto writer = stub.UploadDataset(context.get(), dataset);
  cpm::v1::UploadDatasetRequest request;
  *request.mutable_manifest() = plan.manifest;
  bool open = writer->Write(request);
  int64_t sent = 0;
  std::string local_error;
  std::string buffer(kChunkBytes, '\0');
  for (size_t i = 0; open && i < plan.local_paths.size(); ++i) {
    const auto& info = plan.manifest.files(static_cast<int>(i));
    std::ifstream in(plan.local_paths[i], std::ios::binary);
    int64_t offset = 0;
    do {
      in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
      const auto n = static_cast<size_t>(in.gcount());
      if (in.bad() || (n == 0 && offset < info.size_bytes())) {
        local_error = "cannot read " + plan.local_paths[i];
        break;
      }
      request.Clear();
      auto* chunk = request.mutable_chunk();
      chunk->set_path(info.path());
      chunk->set_offset(offset);
      chunk->set_data(buffer.data(), n);
      offset += static_cast<int64_t>(n);
      chunk->set_last(offset >= info.size_bytes());
      open = writer->Write(request);
      sent += static_cast<int64_t>(n);
      if (progress) progress(sent, plan.total_bytes);
    } while (open && offset < info.size_bytes());
    if (!local_error.empty()) break;
  }
  if (!local_error.empty()) {
    context->TryCancel();
    writer->Finish();
    return grpc::Status(grpc::StatusCode::ABORTED, local_error + " while uploading; nothing was stored");
  }
  writer->WritesDone();
  return writer->Finish();
}

}  // namespace cpmctl
