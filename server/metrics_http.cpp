// SPDX-License-Identifier: Apache-2.0
#include "metrics_http.h"

#include <CivetServer.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "config.h"

namespace cpm::server {

class MetricsHttpServer::Handler : public CivetHandler {
 public:
  explicit Handler(Registry& registry) : registry_(registry) {}

  bool handleGet(CivetServer*, struct mg_connection* conn) override {
    const std::string body = registry_.render();
    mg_printf(conn,
              "HTTP/1.1 200 OK\r\n"
              "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
              "Content-Length: %zu\r\n"
              "Connection: close\r\n\r\n",
              body.size());
    mg_write(conn, body.data(), body.size());
    return true;
  }

 private:
  Registry& registry_;
};

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::start(
    const std::string& address, Registry& registry) {
  auto hp = parse_host_port(address);
  if (!hp.ok()) return hp.status();
  // civetweb wants IPv6 literals as [addr]:port too, so the address passes through unchanged.
  const std::vector<std::string> options = {"listening_ports", address, "num_threads", "2",
                                            "enable_keep_alive", "no"};
  std::unique_ptr<MetricsHttpServer> self(new MetricsHttpServer());
  self->handler_ = std::make_unique<Handler>(registry);
  try {
    self->server_ = std::make_unique<CivetServer>(options);
  } catch (const CivetException& e) {
    return absl::UnavailableError(
        absl::StrCat("metrics endpoint: cannot listen on ", address, " (", e.what(),
                     "); is the port in use? choose another with --metrics-listen"));
  }
  self->server_->addHandler("/metrics", self->handler_.get());
  const std::vector<int> ports = self->server_->getListeningPorts();
  self->port_ = ports.empty() ? hp->port : ports.front();
  return self;
}

MetricsHttpServer::~MetricsHttpServer() {
  if (server_) server_->close();
}

}  // namespace cpm::server
