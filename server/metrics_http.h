// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "metrics.h"

struct mg_connection;
struct mg_context;

namespace cpm::server {

// Serves GET /metrics (Prometheus text format) from a Registry over HTTP (civetweb, two worker
// threads). Stops when destroyed; the registry must outlive it.
class MetricsHttpServer {
 public:
  // Binds `address` (HOST:PORT; port 0 picks a free port). A bind failure is UNAVAILABLE with
  // the address and civetweb's reason in the message.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> start(const std::string& address,
                                                                  Registry& registry);
  ~MetricsHttpServer();
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  // The bound port (the chosen one when 0 was asked for).
  int port() const { return port_; }

 private:
  explicit MetricsHttpServer(Registry& registry) : registry_(registry) {}
  static int handle(mg_connection* conn, void* self);

  Registry& registry_;
  mg_context* context_ = nullptr;
  int port_ = 0;
};

}  // namespace cpm::server
