// SPDX-License-Identifier: Apache-2.0
#include "tls_files.h"

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace cpm::server {
namespace {

namespace fs = std::filesystem;

// Far above any certificate chain or CA bundle; a larger file is the wrong file.
constexpr uintmax_t kMaxPemBytes = 4 << 20;

constexpr std::string_view kCertificate = "-----BEGIN CERTIFICATE-----";
// "-----BEGIN PRIVATE KEY-----", "-----BEGIN RSA PRIVATE KEY-----", "-----BEGIN EC PRIVATE KEY-----"
constexpr std::string_view kPrivateKeyEnd = "PRIVATE KEY-----";

bool contains(const std::string& text, std::string_view part) {
  return text.find(part) != std::string::npos;
}

absl::StatusOr<std::string> read_pem(const char* key, const std::string& path) {
  const std::string what = absl::StrCat(key, " ", path);
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (!fs::exists(status)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": no such file; fix the path or unset ", key));
  }
  if (!fs::is_regular_file(status)) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": not a regular file; give a PEM file"));
  }
  if (fs::file_size(path, ec) > kMaxPemBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": larger than 4 MiB, which no PEM file here should be; wrong file?"));
  }
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  if (in) text << in.rdbuf();
  if (!in || in.bad()) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": cannot be read; let cpmd's user read it (and only that user, for a key)"));
  }
  if (text.str().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": is empty; give a PEM file"));
  }
  return text.str();
}

absl::Status check_certificates(const char* key, const std::string& path, const std::string& pem) {
  if (contains(pem, kCertificate)) return absl::OkStatus();
  if (contains(pem, kPrivateKeyEnd)) {
    return absl::InvalidArgumentError(absl::StrCat(
        key, " ", path, ": holds a private key but no certificate; are tls_cert_file and "
        "tls_key_file swapped?"));
  }
  return absl::InvalidArgumentError(absl::StrCat(
      key, " ", path, ": holds no PEM certificate (", std::string(kCertificate),
      "); convert a DER file with `openssl x509 -inform der -in FILE -out FILE.pem`"));
}

absl::Status check_private_key(const std::string& path, const std::string& pem) {
  const std::string what = absl::StrCat("tls_key_file ", path);
  if (contains(pem, "ENCRYPTED PRIVATE KEY-----") ||
      contains(pem, "Proc-Type: 4,ENCRYPTED")) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": the key is encrypted and cpmd cannot ask for its passphrase; give an "
        "unencrypted copy that only cpmd's user can read (`openssl pkey -in KEY -out PLAIN`)"));
  }
  if (contains(pem, kPrivateKeyEnd)) return absl::OkStatus();
  if (contains(pem, kCertificate)) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": holds a certificate but no private key; are tls_cert_file and tls_key_file "
        "swapped?"));
  }
  return absl::InvalidArgumentError(
      absl::StrCat(what, ": holds no PEM private key (-----BEGIN ... PRIVATE KEY-----)"));
}

}  // namespace

absl::StatusOr<std::optional<TlsFiles>> read_tls_files(const DaemonConfig& config) {
  const bool cert = !config.tls_cert_file.empty();
  const bool key = !config.tls_key_file.empty();
  if (!cert && !key) {
    if (!config.tls_client_ca_file.empty()) {
      return absl::InvalidArgumentError(
          "tls_client_ca_file needs tls_cert_file and tls_key_file: clients can only present "
          "certificates over TLS; set both, or unset tls_client_ca_file");
    }
    return std::nullopt;
  }
  if (cert != key) {
    return absl::InvalidArgumentError(absl::StrCat(
        cert ? "tls_cert_file is set but tls_key_file is not" :
               "tls_key_file is set but tls_cert_file is not",
        "; TLS needs both the certificate and its private key (or neither, for plaintext)"));
  }
  TlsFiles files;
  auto chain = read_pem("tls_cert_file", config.tls_cert_file);
  if (!chain.ok()) return chain.status();
  files.cert_chain = std::move(*chain);
  absl::Status s = check_certificates("tls_cert_file", config.tls_cert_file, files.cert_chain);
  if (!s.ok()) return s;
  auto private_key = read_pem("tls_key_file", config.tls_key_file);
  if (!private_key.ok()) return private_key.status();
  files.private_key = std::move(*private_key);
  s = check_private_key(config.tls_key_file, files.private_key);
  if (!s.ok()) return s;
  if (!config.tls_client_ca_file.empty()) {
    auto ca = read_pem("tls_client_ca_file", config.tls_client_ca_file);
    if (!ca.ok()) return ca.status();
    files.client_ca = std::move(*ca);
    s = check_certificates("tls_client_ca_file", config.tls_client_ca_file, files.client_ca);
    if (!s.ok()) return s;
  }
  return files;
}

}  // namespace cpm::server
