// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "config.h"

namespace cpm::server {

// The PEM text of the TLS files a config names.
struct TlsFiles {
  std::string cert_chain;   // tls_cert_file: the server's certificate, then its intermediates
  std::string private_key;  // tls_key_file
  std::string client_ca;    // tls_client_ca_file; empty: clients need no certificate
};

// Reads tls_cert_file, tls_key_file and tls_client_ca_file; nullopt when TLS is off (none set).
// Errors are INVALID_ARGUMENT naming the key, the file and the fix: only one of the pair set, a
// CA without the pair, a file that is missing, unreadable or empty, a certificate file without a
// certificate, a key file without a private key or with an encrypted one (cpmd cannot ask for a
// passphrase), swapped files. Whether the key belongs to the certificate only gRPC can tell
// (OpenSSL's headers are not on every build host): GrpcSecurity::load asks it.
absl::StatusOr<std::optional<TlsFiles>> read_tls_files(const DaemonConfig& config);

}  // namespace cpm::server
