// SPDX-License-Identifier: Apache-2.0
//
// cpmd: flags and config file -> DaemonConfig -> validate -> start -> wait for SIGTERM/SIGINT ->
// drain -> exit 0. Exit codes: 0 clean shutdown, 1 the daemon could not start, 2 bad
// configuration.
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include <CLI/CLI.hpp>

#include "common/build_info.h"
#include "common/logging.h"
#include "config.h"
#include "daemon.h"

namespace {

using cpm::server::ConfigOverrides;

template <typename T>
void add_option(CLI::App& app, const std::string& flags, std::optional<T>& into,
                const std::string& help) {
  app.add_option_function<T>(flags, [&into](const T& v) { into = v; }, help);
}

}  // namespace

int main(int argc, char** argv) {
  const cpm::server::DaemonConfig defaults;
  ConfigOverrides flags;
  CLI::App app{"cpmd: fine-tunes and serves MiniCPM-o-2.6 for LaTeX OCR over gRPC"};
  app.set_version_flag("--version", "cpmd " + cpm::core::build_info().version + " (" +
                                        cpm::core::build_info().git_commit + ")");
  add_option(app, "--config", flags.config_file,
             "JSON config file; its keys are the long flag names with '_' for '-'");
  add_option(app, "--listen", flags.listen,
             "gRPC address HOST:PORT, port 0 picks one (default " + defaults.listen + ")");
  add_option(app, "--metrics-listen", flags.metrics_listen,
             "Prometheus /metrics address HOST:PORT (default " + defaults.metrics_listen + ")");
  add_option(app, "--data-dir", flags.data_dir,
             "job store, datasets, checkpoints, adapters (default " + defaults.data_dir + ")");
  add_option(app, "--model", flags.model, "MiniCPM-o-2.6 checkpoint directory (Hugging Face format)");
  add_option(app, "--device", flags.device,
             "auto | cpu | cuda | cuda:N; auto takes the first GPU if there is one (default auto)");
  add_option(app, "--dtype", flags.dtype,
             "auto | bfloat16 | float32; auto is bfloat16 on CUDA, float32 on CPU (default auto)");
  add_option(app, "--max-batch-size", flags.max_batch_size,
             "most OCR requests in one batch (default " + std::to_string(defaults.max_batch_size) +
                 ")");
  add_option(app, "--max-batch-wait-ms", flags.max_batch_wait_ms,
             "how long a ready OCR request waits for its batch to fill (default " +
                 std::to_string(defaults.max_batch_wait_ms) + ")");
  add_option(app, "--max-queue", flags.max_queue,
             "OCR requests waiting before RESOURCE_EXHAUSTED (default " +
                 std::to_string(defaults.max_queue) + ")");
  add_option(app, "--adapter-memory-budget-bytes", flags.adapter_memory_budget_bytes,
             "device bytes loaded adapters may hold together, 0 for no limit (default 0)");
  add_option(app, "--adapter-roots", flags.adapter_roots,
             "folders LoadAdapter paths must lie under (default DATA_DIR/adapters)");
  add_option(app, "--dataset-roots", flags.dataset_roots,
             "folders SubmitJob's dataset_path must lie under (default DATA_DIR/datasets)");
  add_option(app, "--log-level", flags.log_level, "debug | info | warn | error (default info)");
  add_option(app, "--log-format", flags.log_format, "text (logfmt) | json (default text)");
  add_option(app, "--max-message-bytes", flags.max_message_bytes,
             "largest gRPC message accepted (default 64 MiB)");
  add_option(app, "--shutdown-grace-seconds", flags.shutdown_grace_seconds,
             "how long in-flight calls may finish on SIGTERM (default 30)");
  add_option(app, "--tls-cert-file", flags.tls_cert_file,
             "PEM certificate chain of the gRPC port; with --tls-key-file turns TLS on");
  add_option(app, "--tls-key-file", flags.tls_key_file, "PEM private key of --tls-cert-file");
  add_option(app, "--tls-client-ca-file", flags.tls_client_ca_file,
             "PEM CA bundle; clients must present a certificate it signed (mutual TLS)");
  add_option(app, "--auth-tokens-file", flags.auth_tokens_file,
             "JSON file of bearer tokens and roles (admin, inference); every call but "
             "grpc.health.v1 then needs one. Also: $CPMD_ADMIN_TOKEN, $CPMD_INFERENCE_TOKEN");
  app.footer("Example: cpmd --listen 127.0.0.1:50051 --data-dir ./var --model /models/MiniCPM-o-2_6");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;  // --help and --version exit 0; usage errors exit 2
  }

  // Tokens may come from the environment (a Kubernetes secretKeyRef), never from a flag, which
  // any user could read in the process list.
  for (const auto& [name, into] : {std::pair{"CPMD_ADMIN_TOKEN", &flags.admin_token},
                                   std::pair{"CPMD_INFERENCE_TOKEN", &flags.inference_token}}) {
    if (const char* value = std::getenv(name); value != nullptr && *value != '\0') *into = value;
  }

  // Signals are taken synchronously by this thread; every thread started later inherits the mask.
  // Blocked before the config is loaded: checking TLS files starts gRPC, whose threads live on.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto config = cpm::server::load_config(flags);
  if (!config.ok()) {
    std::fprintf(stderr, "cpmd: %s\n", std::string(config.status().message()).c_str());
    return 2;
  }
  cpm::core::LogLevel level = cpm::core::LogLevel::kInfo;
  cpm::core::parse_log_level(config->log_level, &level);
  cpm::core::set_log_level(level);
  cpm::core::set_log_format(config->log_format == "json" ? cpm::core::LogFormat::kJson
                                                         : cpm::core::LogFormat::kText);

  const cpm::core::BuildInfo& build = cpm::core::build_info();
  cpm::core::log_info("cpmd starting", {{"version", build.version},
                                        {"commit", build.git_commit},
                                        {"torch", build.torch_version},
                                        {"cuda", build.cuda},
                                        {"data_dir", config->data_dir},
                                        {"model", config->model.empty() ? "none" : config->model}});
  auto daemon = cpm::server::Daemon::start(*config);
  if (!daemon.ok()) {
    cpm::core::log_error("cpmd cannot start", {{"error", std::string(daemon.status().message())}});
    return 1;
  }
  cpm::core::log_info("cpmd ready");

  int sig = 0;
  sigwait(&signals, &sig);
  cpm::core::log_info("shutting down", {{"signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"},
                                        {"grace_seconds", config->shutdown_grace_seconds}});
  (*daemon)->shutdown(std::chrono::seconds(config->shutdown_grace_seconds));
  daemon->reset();
  cpm::core::log_info("cpmd stopped");
  return 0;
}
