// SPDX-License-Identifier: Apache-2.0
#include "metrics_http.h"

#include <civetweb.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "config.h"

namespace cpm::server {

int MetricsHttpServer::handle(mg_connection* conn, void* self) {
  const mg_request_info* request = mg_get_request_info(conn);
  if (std::strcmp(request->request_method, "GET") != 0 &&
      std::strcmp(request->request_method, "HEAD") != 0) {
    mg_send_http_error(conn, 405, "%s", "only GET /metrics");
    return 405;
  }
  const std::string body = static_cast<MetricsHttpServer*>(self)->registry_.render();
  mg_printf(conn,
            "HTTP/1.1 200 OK\r\n"
            "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
            "Content-Length: %zu\r\n"
            "Connection: close\r\n\r\n",
            body.size());
  if (std::strcmp(request->request_method, "GET") == 0) mg_write(conn, body.data(), body.size());
  return 200;
}

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::start(
    const std::string& address, Registry& registry) {
  auto hp = parse_host_port(address);
  if (!hp.ok()) return hp.status();
  mg_init_library(0);
  // civetweb takes IPv6 literals as [addr]:port too, so the address passes through unchanged.
  const char* options[] = {"listening_ports", address.c_str(), "num_threads", "2",
                           "enable_keep_alive", "no", nullptr};
  std::unique_ptr<MetricsHttpServer> self(new MetricsHttpServer(registry));
  mg_callbacks callbacks{};
  mg_init_data init{&callbacks, self.get(), options};
  char error_text[256] = {};
  unsigned error_code = 0;
  mg_error_data error{&error_code, error_text, sizeof error_text};
  self->context_ = mg_start2(&init, &error);
  if (self->context_ == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("metrics endpoint: cannot listen on ", address, " (", error_text,
                     "); is the port in use? choose another with --metrics-listen"));
  }
  mg_set_request_handler(self->context_, "/metrics$", &MetricsHttpServer::handle, self.get());
  mg_server_port ports[4] = {};
  const int n = mg_get_server_ports(self->context_, 4, ports);
  self->port_ = n > 0 ? ports[0].port : hp->port;
  return self;
}

MetricsHttpServer::~MetricsHttpServer() {
  if (context_ != nullptr) mg_stop(context_);
}

}  // namespace cpm::server
