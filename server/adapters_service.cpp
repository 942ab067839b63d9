// SPDX-License-Identifier: Apache-2.0
#include "adapters_service.h"

#include <algorithm>
#include <fstream>
#include <set>

#include "absl/strings/str_cat.h"
#include "adapter_conversion.h"
#include "model_host.h"
#include "runtime/engine.h"
#include "common/sha256.h"
#include "status_conversion.h"

namespace cpm::server {
namespace {

namespace runtime = core::runtime;
using cpm::v1::ExportAdapterResponse;

grpc::ServerUnaryReactor* finish(grpc::CallbackServerContext* context, const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(to_grpc_status(status));
  return reactor;
}

// Finishes `reactor` with the engine's answer, once it comes.
std::function<void(absl::StatusOr<runtime::AdapterInfo>)> answer(grpc::ServerUnaryReactor* reactor,
                                                                 cpm::v1::Adapter* response) {
  return [reactor, response](absl::StatusOr<runtime::AdapterInfo> info) {
    if (info.ok()) to_proto(*info, response);
    reactor->Finish(to_grpc_status(info.status()));
  };
}

constexpr int kDefaultPageSize = 50;
constexpr int kMaxPageSize = 1000;

// ExportAdapter: for each file a FileInfo, then its bytes in chunks, one write at a time. All of
// it runs in the call's reactions (one after another), so it needs no lock. The checksum is taken
// when a file is announced; a file that vanishes or shrinks meanwhile ends the call with DATA_LOSS,
// and the client's checksum catches any other change.
class ExportCall final : public grpc::ServerWriteReactor<ExportAdapterResponse> {
 public:
  // With an error instead of files, the call ends with it at once.
  ExportCall(absl::StatusOr<std::vector<AdapterFile>> files, size_t chunk_bytes)
      : chunk_(chunk_bytes) {
    if (files.ok()) {
      files_ = *std::move(files);
      next();
    } else {
      end(files.status());
    }
  }

  void OnWriteDone(bool ok) override {
    if (!ok) return end(absl::CancelledError("the client went away during the export"));
    next();
  }
  void OnDone() override { delete this; }

 private:
  void next() {
    if (file_ == files_.size()) return end(absl::OkStatus());
    const AdapterFile& f = files_[file_];
    message_.Clear();
    if (!in_.is_open()) {
      auto sha = core::sha256_file(f.path);
      if (!sha.ok()) return end(absl::DataLossError(sha.status().message()));
      in_.open(f.path, std::ios::binary);
      if (!in_) return end(absl::DataLossError(absl::StrCat(f.path, ": cannot be opened")));
      offset_ = 0;
      cpm::v1::FileInfo* info = message_.mutable_file();
      info->set_path(f.name);
      info->set_size_bytes(f.size_bytes);
      info->set_sha256(*sha);
      return StartWrite(&message_);
    }
    const auto take = static_cast<size_t>(
        std::min<int64_t>(static_cast<int64_t>(chunk_), f.size_bytes - offset_));
    cpm::v1::FileChunk* chunk = message_.mutable_chunk();
    chunk->set_path(f.name);
    chunk->set_offset(offset_);
    std::string* data = chunk->mutable_data();
    data->resize(take);
    in_.read(data->data(), static_cast<std::streamsize>(take));
    if (static_cast<size_t>(in_.gcount()) != take) {
      return end(absl::DataLossError(absl::StrCat(
          f.path, ": changed while it was exported (shorter than ", f.size_bytes, " bytes)")));
    }
    offset_ += static_cast<int64_t>(take);
    if (offset_ == f.size_bytes) {
      chunk->set_last(true);
      in_.close();
      ++file_;
    }
    StartWrite(&message_);
  }

  void end(const absl::Status& status) { Finish(to_grpc_status(status)); }

  std::vector<AdapterFile> files_;
  const size_t chunk_;
  size_t file_ = 0;  // the file being sent
  std::ifstream in_;
  int64_t offset_ = 0;
  ExportAdapterResponse message_;  // the message being written
};

}  // namespace

grpc::ServerUnaryReactor* AdaptersService::LoadAdapter(grpc::CallbackServerContext* context,
                                                       const cpm::v1::LoadAdapterRequest* request,
                                                       cpm::v1::Adapter* response) {
  auto engine = host_.engine();
  if (!engine.ok()) return finish(context, engine.status());
  std::string path;
  if (!request->path().empty()) {
    auto resolved = roots_.resolve(request->path());
    if (!resolved.ok()) return finish(context, resolved.status());
    path = *resolved;
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  waiter_.then((*engine)->load_adapter(request->name(), path, request->pin()),
               answer(reactor, response));
  return reactor;
}

grpc::ServerUnaryReactor* AdaptersService::UnloadAdapter(
    grpc::CallbackServerContext* context, const cpm::v1::UnloadAdapterRequest* request,
    cpm::v1::Adapter* response) {
  auto engine = host_.engine();
  if (!engine.ok()) return finish(context, engine.status());
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  waiter_.then((*engine)->unload_adapter(request->name()), answer(reactor, response));
  return reactor;
}

grpc::ServerUnaryReactor* AdaptersService::ListAdapters(grpc::CallbackServerContext* context,
                                                        const cpm::v1::ListAdaptersRequest* request,
                                                        cpm::v1::ListAdaptersResponse* response) {
  auto engine = host_.engine();
  if (!engine.ok()) return finish(context, engine.status());
  const int requested = request->page().page_size();
  if (requested < 0) {
    return finish(context, absl::InvalidArgumentError(absl::StrCat("page.page_size ", requested,
                                                                   " is negative; 0 means 50")));
  }
  const int page_size = requested == 0 ? kDefaultPageSize : std::min(requested, kMaxPageSize);
  const std::set<int> states(request->states().begin(), request->states().end());
  // Adapters come in name order; the page token is the name the next page starts at.
  const std::string& from = request->page().page_token();
  const runtime::AdapterList list = (*engine)->adapters();
  for (const runtime::AdapterInfo& info : list.adapters) {
    if (info.name < from) continue;
    if (!states.empty() && !states.count(to_proto(info.state))) continue;
    if (response->adapters_size() == page_size) {
      response->set_next_page_token(info.name);
      break;
    }
    to_proto(info, response->add_adapters());
  }
  response->set_device_bytes_used(list.device_bytes_used);
  response->set_device_bytes_budget(list.device_bytes_budget);
  return finish(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* AdaptersService::GetAdapter(grpc::CallbackServerContext* context,
                                                      const cpm::v1::GetAdapterRequest* request,
                                                      cpm::v1::Adapter* response) {
  auto engine = host_.engine();
  if (!engine.ok()) return finish(context, engine.status());
  auto info = (*engine)->adapter(request->name());
  if (info.ok()) to_proto(*info, response);
  return finish(context, info.status());
}

grpc::ServerWriteReactor<ExportAdapterResponse>* AdaptersService::ExportAdapter(
    grpc::CallbackServerContext*, const cpm::v1::ExportAdapterRequest* request) {
  auto files = [&]() -> absl::StatusOr<std::vector<AdapterFile>> {
    auto engine = host_.engine();
    if (!engine.ok()) return engine.status();
    auto info = (*engine)->adapter(request->name());
    if (!info.ok()) return info.status();
    return list_adapter_files(info->path);
  }();
  return new ExportCall(std::move(files), chunk_bytes_);
}

}  // namespace cpm::server
