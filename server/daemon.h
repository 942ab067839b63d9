// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "config.h"

namespace cpm::server {

// The running daemon: data directory (locked, so two daemons never share one), job store, the model
// host (loads the checkpoint on a thread and owns the engine that serves it), gRPC server (cpm.v1
// services, grpc.health.v1, reflection, request metrics) and the /metrics endpoint.
// Owned by main(); shutdown() may be called from one thread while another waits in wait().
class Daemon {
 public:
  // Everything is listening when this returns. Errors say what failed and what to do.
  static absl::StatusOr<std::unique_ptr<Daemon>> start(const DaemonConfig& config);
  ~Daemon();

  // Marks every service NOT_SERVING, stops accepting calls, lets in-flight calls finish for up to
  // `grace`, then cancels the rest, stops the engine (after a load in progress ends) and the
  // metrics endpoint. Idempotent.
  void shutdown(std::chrono::seconds grace);

  int grpc_port() const;
  int metrics_port() const;

 private:
  struct State;
  explicit Daemon(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace cpm::server
