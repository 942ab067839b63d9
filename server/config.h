// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace cpm::server {

// Everything cpmd is configured with. Sources, highest precedence first: command-line flags, the
// JSON config file (--config), the defaults below. Keys of the file are the field names; a key
// the daemon does not know is an error.
struct DaemonConfig {
  // gRPC address, HOST:PORT. Port 0 picks a free port (the daemon logs it). Default: loopback only.
  std::string listen = "127.0.0.1:50051";
  // Prometheus /metrics over HTTP, HOST:PORT (port 0 as above).
  std::string metrics_listen = "127.0.0.1:9464";
  // Where the job store (SQLite), datasets, checkpoints and adapters live. Created if missing.
  std::string data_dir = "./var";
  // Hugging Face checkpoint directory of MiniCPM-o-2.6 (config.json, safetensors, tokenizer).
  // Empty: start without a model.
  std::string model;
  // Where the weights live: "auto" (the first CUDA device when one is visible, else the CPU),
  // "cpu", "cuda" or "cuda:N".
  std::string device = "auto";
  // The weights' dtype: "auto" (bfloat16 on CUDA, float32 on the CPU), "bfloat16" or "float32".
  std::string dtype = "auto";
  // OCR batching: most requests in one engine cycle, and how long the oldest ready request waits
  // for a cycle to fill up.
  int64_t max_batch_size = 8;
  int64_t max_batch_wait_ms = 5;
  // OCR requests admitted but not yet running; one more is RESOURCE_EXHAUSTED at once.
  int64_t max_queue = 256;
  // Device bytes that loaded adapters may hold together; beyond it, unpinned adapters are evicted
  // least recently used first. 0: no limit.
  int64_t adapter_memory_budget_bytes = 0;
  // Folders that LoadAdapter paths must lie under once symlinks are resolved; relative paths in a
  // request are taken relative to the first. Empty: <data_dir>/adapters alone.
  std::vector<std::string> adapter_roots;
  // Folders that SubmitJob's dataset_path must lie in once symlinks are resolved (uploads always
  // work). Empty: <data_dir>/datasets alone.
  std::vector<std::string> dataset_roots;
  // "debug" | "info" | "warn" | "error".
  std::string log_level = "info";
  // "text" (logfmt) | "json".
  std::string log_format = "text";
  // Largest gRPC message accepted, in bytes (an encoded image must fit).
  int64_t max_message_bytes = 64LL << 20;
  // On SIGTERM/SIGINT, how long in-flight calls get to finish before they are cancelled.
  int64_t shutdown_grace_seconds = 30;

  // TLS on the gRPC port: the server's certificate chain and its private key, PEM files. Both or
  // neither; empty: plaintext.
  std::string tls_cert_file;
  std::string tls_key_file;
  // PEM bundle of the CAs that sign client certificates. Set: mutual TLS, every client must
  // present a certificate one of them signed. Needs tls_cert_file and tls_key_file.
  std::string tls_client_ca_file;
  // JSON file of bearer tokens and their roles (server/auth_tokens.h has the format). With it or
  // an environment token, every call but grpc.health.v1 needs a token. Empty with no environment
  // token: no authentication.
  std::string auth_tokens_file;
  // Tokens from the environment (CPMD_ADMIN_TOKEN, CPMD_INFERENCE_TOKEN), read by main(). Neither
  // a flag nor a config-file key, so that a secret never sits on a command line or in a ConfigMap;
  // never logged.
  std::string admin_token;
  std::string inference_token;
};

// Values given on the command line; unset ones fall through to the file and the defaults.
struct ConfigOverrides {
  std::optional<std::string> config_file;
  std::optional<std::string> listen;
  std::optional<std::string> metrics_listen;
  std::optional<std::string> data_dir;
  std::optional<std::string> model;
  std::optional<std::string> device;
  std::optional<std::string> dtype;
  std::optional<int64_t> max_batch_size;
  std::optional<int64_t> max_batch_wait_ms;
  std::optional<int64_t> max_queue;
  std::optional<int64_t> adapter_memory_budget_bytes;
  std::optional<std::vector<std::string>> adapter_roots;
  std::optional<std::vector<std::string>> dataset_roots;
  std::optional<std::string> log_level;
  std::optional<std::string> log_format;
  std::optional<int64_t> max_message_bytes;
  std::optional<int64_t> shutdown_grace_seconds;
  std::optional<std::string> tls_cert_file;
  std::optional<std::string> tls_key_file;
  std::optional<std::string> tls_client_ca_file;
  std::optional<std::string> auth_tokens_file;
  // From the environment, not from flags (see DaemonConfig).
  std::optional<std::string> admin_token;
  std::optional<std::string> inference_token;
};

// Defaults, then the config file if one is named, then the flags; then validate(). Errors are
// INVALID_ARGUMENT (or NOT_FOUND for a missing file) with a message naming the key and the fix.
absl::StatusOr<DaemonConfig> load_config(const ConfigOverrides& flags);

// Checks every field: address syntax and port range, log level and format, device and dtype names,
// limits, that a configured model directory exists and holds config.json, that configured
// adapter roots are directories, and that the TLS files and tokens load (GrpcSecurity::load).
absl::Status validate(const DaemonConfig& config);

// A host:port split; the host may be a bracketed IPv6 literal.
struct HostPort {
  std::string host;
  int port = 0;
};
absl::StatusOr<HostPort> parse_host_port(const std::string& address);

}  // namespace cpm::server
