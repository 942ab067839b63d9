// SPDX-License-Identifier: Apache-2.0
#include "config.h"

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "grpc_security.h"
#include "nlohmann/json.hpp"

namespace cpm::server {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// One row per config key: how to read it from JSON and where it goes.
struct Field {
  const char* key;
  std::string DaemonConfig::*text = nullptr;
  int64_t DaemonConfig::*number = nullptr;
  std::vector<std::string> DaemonConfig::*list = nullptr;
};

constexpr Field kFields[] = {
    {"listen", &DaemonConfig::listen},
    {"metrics_listen", &DaemonConfig::metrics_listen},
    {"data_dir", &DaemonConfig::data_dir},
    {"model", &DaemonConfig::model},
    {"device", &DaemonConfig::device},
    {"dtype", &DaemonConfig::dtype},
    {"max_batch_size", nullptr, &DaemonConfig::max_batch_size},
    {"max_batch_wait_ms", nullptr, &DaemonConfig::max_batch_wait_ms},
    {"max_queue", nullptr, &DaemonConfig::max_queue},
    {"adapter_memory_budget_bytes", nullptr, &DaemonConfig::adapter_memory_budget_bytes},
    {"adapter_roots", nullptr, nullptr, &DaemonConfig::adapter_roots},
    {"dataset_roots", nullptr, nullptr, &DaemonConfig::dataset_roots},
    {"log_level", &DaemonConfig::log_level},
    {"log_format", &DaemonConfig::log_format},
    {"max_message_bytes", nullptr, &DaemonConfig::max_message_bytes},
    {"shutdown_grace_seconds", nullptr, &DaemonConfig::shutdown_grace_seconds},
    {"tls_cert_file", &DaemonConfig::tls_cert_file},
    {"tls_key_file", &DaemonConfig::tls_key_file},
    {"tls_client_ca_file", &DaemonConfig::tls_client_ca_file},
    {"auth_tokens_file", &DaemonConfig::auth_tokens_file},
};

std::string known_keys() {
  std::vector<std::string> keys;
  for (const Field& f : kFields) keys.emplace_back(f.key);
  return absl::StrJoin(keys, ", ");
}

absl::Status apply_file(const std::string& path, DaemonConfig& config) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("config file ", path, ": cannot be opened (does it exist and is it readable?)"));
  }
  std::stringstream buf;
  buf << in.rdbuf();
  json doc;
  try {
    doc = json::parse(buf.str());
  } catch (const json::parse_error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("config file ", path, ": not valid JSON: ", e.what()));
  }
  if (!doc.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("config file ", path, ": must hold one JSON object of settings"));
  }
  for (const auto& [key, value] : doc.items()) {
    const Field* field = nullptr;
    for (const Field& f : kFields) {
      if (key == f.key) field = &f;
    }
    if (field == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("config file ", path, ": unknown key '", key,
                                                     "' (known keys: ", known_keys(), ")"));
    }
    if (field->text != nullptr) {
      if (!value.is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat("config file ", path, ": '", key, "' must be a string"));
      }
      config.*(field->text) = value.get<std::string>();
    } else if (field->list != nullptr) {
      const bool strings = value.is_array() && std::all_of(value.begin(), value.end(), [](
                                                   const json& v) { return v.is_string(); });
      if (!strings) {
        return absl::InvalidArgumentError(
            absl::StrCat("config file ", path, ": '", key, "' must be a list of strings"));
      }
      config.*(field->list) = value.get<std::vector<std::string>>();
    } else {
      if (!value.is_number_integer()) {
        return absl::InvalidArgumentError(
            absl::StrCat("config file ", path, ": '", key, "' must be an integer"));
      }
      config.*(field->number) = value.get<int64_t>();
    }
  }
  return absl::OkStatus();
}

// "auto", "cpu", "cuda" or "cuda:N".
bool is_device_name(const std::string& device) {
  if (device == "auto" || device == "cpu" || device == "cuda") return true;
  if (device.rfind("cuda:", 0) != 0 || device.size() == 5 || device.size() > 8) return false;
  return std::all_of(device.begin() + 5, device.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// `value` in [lo, hi], else an error naming the key.
absl::Status check_range(const char* key, int64_t value, int64_t lo, int64_t hi) {
  if (value >= lo && value <= hi) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(key, " ", value, " is out of range [", lo, ", ", hi, "]"));
}

template <typename T>
void overlay(const std::optional<T>& flag, T& field) {
  if (flag) field = *flag;
}

}  // namespace

absl::StatusOr<HostPort> parse_host_port(const std::string& address) {
  const auto colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == address.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", address, "' is not HOST:PORT (for example 127.0.0.1:50051)"));
  }
  HostPort hp;
  hp.host = address.substr(0, colon);
  if (hp.host.front() == '[' && hp.host.back() != ']') {
    return absl::InvalidArgumentError(absl::StrCat("'", address, "': unbalanced '[' in host"));
  }
  const std::string port = address.substr(colon + 1);
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), hp.port);
  if (ec != std::errc() || end != port.data() + port.size() || hp.port < 0 || hp.port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", address, "': port must be a number from 0 to 65535 (0 picks a free one)"));
  }
  return hp;
}

absl::Status validate(const DaemonConfig& c) {
  for (const auto& [name, value] :
       {std::pair<const char*, const std::string&>{"listen", c.listen},
        std::pair<const char*, const std::string&>{"metrics_listen", c.metrics_listen}}) {
    auto hp = parse_host_port(value);
    if (!hp.ok()) return absl::InvalidArgumentError(absl::StrCat(name, ": ", hp.status().message()));
  }
  if (c.listen == c.metrics_listen && parse_host_port(c.listen)->port != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("listen and metrics_listen are both ", c.listen, "; give them different ports"));
  }
  if (c.data_dir.empty()) return absl::InvalidArgumentError("data_dir must not be empty");
  if (c.log_level != "debug" && c.log_level != "info" && c.log_level != "warn" &&
      c.log_level != "error") {
    return absl::InvalidArgumentError(absl::StrCat(
        "log_level '", c.log_level, "' is not one of debug, info, warn, error"));
  }
  if (c.log_format != "text" && c.log_format != "json") {
    return absl::InvalidArgumentError(
        absl::StrCat("log_format '", c.log_format, "' is not one of text, json"));
  }
  if (c.max_message_bytes < (1 << 20) || c.max_message_bytes > (1LL << 31) - 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_message_bytes ", c.max_message_bytes,
                                                   " is out of range [1 MiB, 2 GiB)"));
  }
  if (c.shutdown_grace_seconds < 0 || c.shutdown_grace_seconds > 3600) {
    return absl::InvalidArgumentError(absl::StrCat(
        "shutdown_grace_seconds ", c.shutdown_grace_seconds, " is out of range [0, 3600]"));
  }
  if (!is_device_name(c.device)) {
    return absl::InvalidArgumentError(
        absl::StrCat("device '", c.device, "' is not one of auto, cpu, cuda, cuda:N"));
  }
  if (c.dtype != "auto" && c.dtype != "bfloat16" && c.dtype != "float32") {
    return absl::InvalidArgumentError(
        absl::StrCat("dtype '", c.dtype, "' is not one of auto, bfloat16, float32"));
  }
  for (const absl::Status& s :
       {check_range("max_batch_size", c.max_batch_size, 1, 1024),
        check_range("max_batch_wait_ms", c.max_batch_wait_ms, 0, 60000),
        check_range("max_queue", c.max_queue, 1, 1000000),
        check_range("adapter_memory_budget_bytes", c.adapter_memory_budget_bytes, 0,
                    std::numeric_limits<int64_t>::max())}) {
    if (!s.ok()) return s;
  }
  for (const auto& [key, roots] : {std::pair{"adapter_roots", &c.adapter_roots},
                                    std::pair{"dataset_roots", &c.dataset_roots}}) {
    for (const std::string& root : *roots) {
      std::error_code ec;
      if (root.empty() || !fs::is_directory(root, ec)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "'", root, "' in ", key, " is not a directory; create it or fix ", key));
      }
    }
  }
  if (!c.model.empty()) {
    std::error_code ec;
    if (!fs::is_directory(c.model, ec)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model '", c.model, "' is not a directory; point --model at a Hugging Face checkpoint "
          "directory of MiniCPM-o-2.6 (config.json, *.safetensors, tokenizer.json)"));
    }
    if (!fs::is_regular_file(fs::path(c.model) / "config.json", ec)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model '", c.model, "' has no config.json; is it a Hugging Face checkpoint directory?"));
    }
  }
  // Reads the TLS files and tokens, as the daemon will, so that a bad one is a configuration
  // error (exit 2) rather than a failed start.
  return GrpcSecurity::load(c).status();
}

absl::StatusOr<DaemonConfig> load_config(const ConfigOverrides& flags) {
  DaemonConfig config;
  if (flags.config_file) {
    absl::Status s = apply_file(*flags.config_file, config);
    if (!s.ok()) return s;
  }
  overlay(flags.listen, config.listen);
  overlay(flags.metrics_listen, config.metrics_listen);
  overlay(flags.data_dir, config.data_dir);
  overlay(flags.model, config.model);
  overlay(flags.device, config.device);
  overlay(flags.dtype, config.dtype);
  overlay(flags.max_batch_size, config.max_batch_size);
  overlay(flags.max_batch_wait_ms, config.max_batch_wait_ms);
  overlay(flags.max_queue, config.max_queue);
  overlay(flags.adapter_memory_budget_bytes, config.adapter_memory_budget_bytes);
  overlay(flags.adapter_roots, config.adapter_roots);
  overlay(flags.dataset_roots, config.dataset_roots);
  overlay(flags.log_level, config.log_level);
  overlay(flags.log_format, config.log_format);
  overlay(flags.max_message_bytes, config.max_message_bytes);
  overlay(flags.shutdown_grace_seconds, config.shutdown_grace_seconds);
  overlay(flags.tls_cert_file, config.tls_cert_file);
  overlay(flags.tls_key_file, config.tls_key_file);
  overlay(flags.tls_client_ca_file, config.tls_client_ca_file);
  overlay(flags.auth_tokens_file, config.auth_tokens_file);
  overlay(flags.admin_token, config.admin_token);
  overlay(flags.inference_token, config.inference_token);
  absl::Status s = validate(config);
  if (!s.ok()) return s;
  return config;
}

}  // namespace cpm::server
