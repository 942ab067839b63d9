// SPDX-License-Identifier: Apache-2.0
//
// cpmctl: the command line for cpmd. Exit codes: 0 ok, 1 server-side error (or problems found in a
// dataset), 2 usage error, 3 daemon unreachable, 130 Ctrl-C.
#include <grpc/support/log.h>

#include <cstdio>
#include <cstdlib>

#include <CLI/CLI.hpp>

#include "adapters_command.h"
#include "cli_checks.h"
#include "connection.h"
#include "cpm/v1/admin.grpc.pb.h"
#include "dataset_command.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "jobs_command.h"
#include "metrics_command.h"
#include "ocr_command.h"
#include "output.h"
#include "train_command.h"

namespace cpmctl {
namespace {

int run_health(const GlobalOptions& options, const std::string& service) {
  const std::string& server = options.server;
  auto stub = make_stub<grpc::health::v1::Health>(options);
  if (!stub) return kExitUsage;
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
  const std::string& server = options.server;
  auto stub = make_stub<cpm::v1::Admin>(options);
  if (!stub) return kExitUsage;
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
  // gRPC's own log lines (a failed TLS handshake, say) would come on top of cpmctl's one-line
  // error, which carries the same reason; GRPC_VERBOSITY=debug still shows them.
  if (std::getenv("GRPC_VERBOSITY") == nullptr) gpr_set_log_function([](gpr_log_func_args*) {});
  cpmctl::GlobalFlags flags;
  CLI::App app{"cpmctl: command line for cpmd (MiniCPM-o-2.6 LaTeX OCR fine-tuning and serving)"};
  app.require_subcommand(1);
  app.fallthrough();  // global flags may also follow the subcommand
  // Usage errors are one line, as every other error.
  app.failure_message([](const CLI::App*, const CLI::Error& e) {
    return "cpmctl: " + std::string(e.what()) + " (see --help)\n";
  });
  app.add_option("--server", flags.server,
                 "cpmd address HOST:PORT (else $CPM_SERVER, the config file, 127.0.0.1:50051)");
  app.add_option("--tls-ca", flags.tls_ca,
                 "PEM root certificate(s): talk TLS and trust this CA (else $CPM_TLS_CA, the config file; "
                 "none: plaintext)");
  app.add_option("--tls-cert", flags.tls_cert,
                 "PEM certificate chain of this client, for a daemon that requires one (mutual TLS; with "
                 "--tls-key; else $CPM_TLS_CERT, the config file)");
  app.add_option("--tls-key", flags.tls_key,
                 "PEM private key of --tls-cert (else $CPM_TLS_KEY, the config file)");
  app.add_option("--token", flags.token,
                 "bearer token sent with every call (else $CPM_TOKEN, the config file)");
  app.add_option("--timeout", flags.timeout_seconds,
                 "seconds to wait for an answer to a call (else the config file, 10); watches and uploads "
                 "have no limit")
      ->check(cpmctl::positive());
  app.add_flag("--json", flags.json, "machine-readable JSON output");
  app.footer(
      "Config file: $XDG_CONFIG_HOME/cpmctl/config.json (else ~/.config/cpmctl/config.json), e.g.\n"
      "  {\"server\": \"gpu-node:50051\", \"token\": \"...\", \"tls_ca\": \"ca.pem\", \"timeout\": 30}\n"
      "Precedence: flag > environment > config file > default.\n"
      "Exit codes: 0 ok, 1 the daemon answered with an error (or a dataset has problems), 2 usage error, "
      "3 daemon unreachable, 130 Ctrl-C.\n"
      "Example: cpmctl --server gpu-node:50051 --token $TOKEN info");

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
  cpmctl::DatasetOptions dataset_options;
  const cpmctl::DatasetCommands dataset = cpmctl::add_dataset_commands(app, dataset_options);
  cpmctl::MetricsOptions metrics_options;
  CLI::App* metrics = cpmctl::add_metrics_command(app, metrics_options);
  cpmctl::TrainOptions train_options;
  CLI::App* train = cpmctl::add_train_command(app, train_options);
  cpmctl::JobsOptions jobs_options;
  const cpmctl::JobsCommands jobs = cpmctl::add_jobs_commands(app, jobs_options);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? cpmctl::kExitOk : cpmctl::kExitUsage;
  }
  // Local commands need no daemon, so a broken config file does not stop them.
  if (dataset.parsed()) return cpmctl::run_dataset_command(dataset, dataset_options, flags.json);

  std::string warning;
  auto options = cpmctl::resolve_settings(flags, cpmctl::process_env(), &warning);
  if (!options.ok()) {
    std::fprintf(stderr, "cpmctl: %s\n", std::string(options.status().message()).c_str());
    return cpmctl::kExitUsage;
  }
  if (!warning.empty()) std::fprintf(stderr, "cpmctl: %s\n", warning.c_str());
  if (health->parsed()) return cpmctl::run_health(*options, service);
  if (info->parsed()) return cpmctl::run_info(*options);
  if (ocr->parsed()) return cpmctl::run_ocr(*options, ocr_options);
  if (metrics->parsed()) return cpmctl::run_metrics(*options, metrics_options);
  if (train->parsed()) return cpmctl::run_train(*options, train_options);
  if (jobs.parsed()) return cpmctl::run_jobs_command(*options, jobs, jobs_options);
  return cpmctl::run_adapter_command(*options, adapters, adapter_options);
}
