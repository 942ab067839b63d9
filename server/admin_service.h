// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <chrono>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "cpm/v1/admin.grpc.pb.h"
#include "config.h"
#include "io/model_config.h"

namespace cpm::server {

// What Admin.GetInfo reports about the running daemon, fixed once it listens.
struct ServerFacts {
  DaemonConfig config;
  // The checkpoint's configs, read at start-up when --model is set.
  std::optional<core::io::CheckpointConfigs> model_configs;
  std::string metrics_address;  // with the bound port
  std::chrono::system_clock::time_point start_time;
  // Fully-qualified names of the services that answer UNIMPLEMENTED in this build.
  std::vector<std::string> unimplemented_services;
};

class ModelHost;

// cpm.v1.Admin: build, model, device and status information. Thread-safe; `host` must outlive the
// gRPC server.
class AdminService final : public cpm::v1::Admin::CallbackService {
 public:
  AdminService(ServerFacts facts, const ModelHost& host) : facts_(std::move(facts)), host_(host) {}

  // The gRPC port is bound only once the server (and so this service) is running.
  void set_grpc_address(std::string address);

  grpc::ServerUnaryReactor* GetInfo(grpc::CallbackServerContext* context,
                                    const cpm::v1::GetInfoRequest* request,
                                    cpm::v1::ServerInfo* response) override;

 private:
  const ServerFacts facts_;
  const ModelHost& host_;
  mutable std::mutex mu_;
  std::string grpc_address_ ABSL_GUARDED_BY(mu_);
};

}  // namespace cpm::server
