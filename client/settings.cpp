// SPDX-License-Identifier: Apache-2.0
#include "settings.h"

#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/read_file.h"

namespace cpmctl {
namespace {

namespace fs = std::filesystem;

// The config file's values; unset where the file does not say.
struct FileSettings {
  std::optional<std::string> server, token, tls_ca, tls_cert, tls_key;
  std::optional<double> timeout_seconds;
};

absl::StatusOr<FileSettings> read_config_file(const std::string& path) {
  FileSettings out;
  auto text = cpm::core::read_whole_file(path);
  if (absl::IsNotFound(text.status())) return out;
  if (!text.ok()) return text.status();
  const nlohmann::json j = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a JSON object; write e.g. {\"server\": \"host:50051\"}"));
  }
  for (const auto& [key, value] : j.items()) {
    if (key == "timeout") {
      if (!value.is_number() || value.get<double>() <= 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": \"timeout\" must be a positive number of seconds"));
      }
      out.timeout_seconds = value.get<double>();
      continue;
    }
    std::optional<std::string>* field = key == "server"     ? &out.server
                                        : key == "token"    ? &out.token
                                        : key == "tls_ca"   ? &out.tls_ca
                                        : key == "tls_cert" ? &out.tls_cert
                                        : key == "tls_key"  ? &out.tls_key
                                                            : nullptr;
    if (field == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": unknown key \"", key, "\"; the keys are server, token, tls_ca, tls_cert, tls_key and timeout"));
    }
    if (!value.is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": \"", key, "\" must be a string"));
    }
    *field = value.get<std::string>();
  }
  // A relative certificate or key path means the file's own folder, wherever cpmctl runs from.
  for (std::optional<std::string>* file : {&out.tls_ca, &out.tls_cert, &out.tls_key}) {
    if (*file && !(*file)->empty() && fs::path(**file).is_relative()) {
      *file = (fs::path(path).parent_path() / **file).string();
    }
  }
  return out;
}

// The first source that has a value.
template <typename T>
void pick(T& into, const std::optional<T>& flag, const std::optional<T>& env,
          const std::optional<T>& file) {
  if (flag) {
    into = *flag;
  } else if (env) {
    into = *env;
  } else if (file) {
    into = *file;
  }
}

}  // namespace

EnvLookup process_env() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* value = std::getenv(name.c_str());
    if (value == nullptr || *value == '\0') return std::nullopt;
    return std::string(value);
  };
}

std::string config_file_path(const EnvLookup& env) {
  if (auto xdg = env("XDG_CONFIG_HOME")) return (fs::path(*xdg) / "cpmctl" / "config.json").string();
  if (auto home = env("HOME")) return (fs::path(*home) / ".config" / "cpmctl" / "config.json").string();
  return "";
}

absl::StatusOr<GlobalOptions> resolve_settings(const GlobalFlags& flags, const EnvLookup& env,
                                               std::string* warning) {
  GlobalOptions options;
  options.json = flags.json;
  FileSettings file;
  if (const std::string path = config_file_path(env); !path.empty()) {
    auto read = read_config_file(path);
    if (!read.ok()) return read.status();
    file = std::move(*read);
    struct stat st {};
    if (file.server || file.token || file.tls_ca || file.tls_cert || file.tls_key || file.timeout_seconds) {
      options.config_file = path;
      if (file.token && stat(path.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
        *warning = absl::StrCat("warning: ", path,
                                " holds a token and other users may read it; chmod 600 it");
      }
    }
  }
  pick(options.server, flags.server, env("CPM_SERVER"), file.server);
  pick(options.token, flags.token, env("CPM_TOKEN"), file.token);
  pick(options.tls_ca, flags.tls_ca, env("CPM_TLS_CA"), file.tls_ca);
  pick(options.tls_cert, flags.tls_cert, env("CPM_TLS_CERT"), file.tls_cert);
  pick(options.tls_key, flags.tls_key, env("CPM_TLS_KEY"), file.tls_key);
  if (options.tls_cert.empty() != options.tls_key.empty()) {
    return absl::InvalidArgumentError(
        "a client certificate needs its key and the other way round: give both --tls-cert and --tls-key");
  }
  if (!options.tls_cert.empty() && options.tls_ca.empty()) {
    return absl::InvalidArgumentError(
        "--tls-cert is for TLS: give --tls-ca too (the CA that signed the daemon's certificate)");
  }
  pick(options.timeout_seconds, flags.timeout_seconds, std::optional<double>(), file.timeout_seconds);
  return options;
}

}  // namespace cpmctl
