// SPDX-License-Identifier: Apache-2.0
//
// Where cpmctl finds the daemon and how it talks to it, from four sources in order of precedence:
// flag > environment (CPM_SERVER, CPM_TOKEN, CPM_TLS_CA, CPM_TLS_CERT, CPM_TLS_KEY) > config file >
// default. The config file is $XDG_CONFIG_HOME/cpmctl/config.json (else ~/.config/cpmctl/config.json),
// a JSON object with any of the keys server, token, tls_ca, tls_cert, tls_key (files relative to the
// config file's folder) and timeout (seconds).
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace cpmctl {

// What the command line said; unset means "not given".
struct GlobalFlags {
  std::optional<std::string> server;
  std::optional<std::string> token;
  std::optional<std::string> tls_ca;
  std::optional<std::string> tls_cert;
  std::optional<std::string> tls_key;
  std::optional<double> timeout_seconds;
  bool json = false;
};

// The settings every command uses, resolved.
struct GlobalOptions {
  std::string server = "127.0.0.1:50051";  // HOST:PORT
  std::string token;                       // sent as "authorization: Bearer <token>"; empty: none
  std::string tls_ca;                      // PEM file of the root certificates; empty: plaintext
  // PEM files of this client's certificate chain and private key, for a daemon that asks for one
  // (mutual TLS); both or neither, and only with tls_ca.
  std::string tls_cert, tls_key;
  double timeout_seconds = 10;             // deadline of each unary call
  bool json = false;
  std::string config_file;                 // the file that was read, if any (for messages)
};

// Reads an environment variable; empty counts as unset.
using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;
EnvLookup process_env();

// The config file's path: $XDG_CONFIG_HOME/cpmctl/config.json, else $HOME/.config/cpmctl/...;
// empty when neither variable is set.
std::string config_file_path(const EnvLookup& env);

// Applies the precedence. INVALID_ARGUMENT (naming the file and key) for a config file that is not
// a JSON object, has an unknown key or a value of the wrong type; a missing file is not an error.
// `warning` receives a line for a config file that holds a token and others may read.
absl::StatusOr<GlobalOptions> resolve_settings(const GlobalFlags& flags, const EnvLookup& env,
                                               std::string* warning);

}  // namespace cpmctl
