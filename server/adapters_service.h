// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstddef>

#include "adapter_files.h"
#include "cpm/v1/adapters.grpc.pb.h"
#include "future_waiter.h"

namespace cpm::server {

class ModelHost;

// cpm.v1.Adapters on the engine's adapter registry. LoadAdapter paths are confined to the
// adapter roots; loads and unloads run on the engine and are awaited off the gRPC threads.
// Thread-safe; the host must outlive the gRPC server, and this service must be destroyed only
// after the server has stopped (it waits for the loads it is still answering).
class AdaptersService final : public cpm::v1::Adapters::CallbackService {
 public:
  // ExportAdapter sends files in chunks of `chunk_bytes`.
  AdaptersService(const ModelHost& host, PathRoots roots, size_t chunk_bytes)
      : host_(host), roots_(std::move(roots)), chunk_bytes_(chunk_bytes) {}

  grpc::ServerUnaryReactor* LoadAdapter(grpc::CallbackServerContext* context,
                                        const cpm::v1::LoadAdapterRequest* request,
                                        cpm::v1::Adapter* response) override;
  grpc::ServerUnaryReactor* UnloadAdapter(grpc::CallbackServerContext* context,
                                          const cpm::v1::UnloadAdapterRequest* request,
                                          cpm::v1::Adapter* response) override;
  grpc::ServerUnaryReactor* ListAdapters(grpc::CallbackServerContext* context,
                                         const cpm::v1::ListAdaptersRequest* request,
                                         cpm::v1::ListAdaptersResponse* response) override;
  grpc::ServerUnaryReactor* GetAdapter(grpc::CallbackServerContext* context,
                                       const cpm::v1::GetAdapterRequest* request,
                                       cpm::v1::Adapter* response) override;
  grpc::ServerWriteReactor<cpm::v1::ExportAdapterResponse>* ExportAdapter(
      grpc::CallbackServerContext* context, const cpm::v1::ExportAdapterRequest* request) override;

 private:
  const ModelHost& host_;
  const PathRoots roots_;
  const size_t chunk_bytes_;
  FutureWaiter waiter_;
};

}  // namespace cpm::server
