// SPDX-License-Identifier: Apache-2.0
//
// cpmctl: the command line for cpmd. Exit codes: 0 ok, 1 server-side error, 2 usage error,
// 3 daemon unreachable.
#include <cstdio>
#include <iostream>

#include <CLI/CLI.hpp>

#include "adapters_command.h"
#include "connection.h"
#include "cpm/v1/admin.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "ocr_command.h"
#include "output.h"

namespace cpmctl {
namespace {

int run_health(const GlobalOptions& options, const std::string& service) {
  const std::string server = resolve_server(options);
  auto stub = grpc::health::v1::Health::NewStub(make_channel(server));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  auto context = make_context(options);
  const grpc::Status status = stub->Check(context.get(), request, &response);
  if (!status.ok()) return report_error(status, server, "health check");
  const std::string state =
      grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status());
  if (options.json) {
    std::printf("{\"server\": \"%s\", \"service\": \"%s\", \"status\": \"%s\"}\n", server.c_str(),
                service.c_str(), state.c_str());
  } else {
    std::printf("%s%s%s\n", state.c_str(), service.empty() ? "" : " ", service.c_str());
  }
  return response.status() == grpc::health::v1::HealthCheckResponse::SERVING ? kExitOk
                                                                               : kExitServerError;
}

int run_info(const GlobalOptions& options) {
  const std::string server = resolve_server(options);
  auto stub = cpm::v1::Admin::NewStub(make_channel(server));
  cpm::v1::ServerInfo info;
  auto context = make_context(options);
  const grpc::Status status = stub->GetInfo(context.get(), cpm::v1::GetInfoRequest(), &info);
  if (!status.ok()) return report_error(status, server, "info");
  std::fputs(options.json ? to_json(info).c_str() : format_info(info).c_str(), stdout);
  return kExitOk;
}

}  // namespace
}  // namespace cpmctl

int main(int argc, char** argv) {
  cpmctl::GlobalOptions options;
  CLI::App app{"cpmctl: command line for cpmd (MiniCPM-o-2.6 LaTeX OCR fine-tuning and serving)"};
  app.require_subcommand(1);
  app.fallthrough();  // global flags may also follow the subcommand
  app.add_option("--server", options.server,
                 "cpmd address HOST:PORT (default: $CPM_SERVER, else 127.0.0.1:50051)");
  app.add_option("--timeout", options.timeout_seconds, "seconds to wait for an answer (default 10)")
      ->check(CLI::PositiveNumber);
  app.add_flag("--json", options.json, "machine-readable JSON output");

  std::string service;
  CLI::App* health = app.add_subcommand("health", "Is cpmd serving? Exit 0 when SERVING");
  health->add_option("--service", service,
                     "one service, e.g. cpm.v1.Ocr (default: the whole server)");
  health->footer("Example: cpmctl --server 127.0.0.1:50051 health");
  CLI::App* info = app.add_subcommand("info", "Build, model, devices and status of cpmd");
  info->footer("Example: cpmctl info --json");
  cpmctl::OcrOptions ocr_options;
  CLI::App* ocr = cpmctl::add_ocr_command(app, ocr_options);
  cpmctl::AdapterOptions adapter_options;
  const cpmctl::AdapterCommands adapters = cpmctl::add_adapter_commands(app, adapter_options);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? cpmctl::kExitOk : cpmctl::kExitUsage;
  }
  if (health->parsed()) return cpmctl::run_health(options, service);
  if (info->parsed()) return cpmctl::run_info(options);
  if (ocr->parsed()) return cpmctl::run_ocr(options, ocr_options);
  return cpmctl::run_adapter_command(options, adapters, adapter_options);
}
