// SPDX-License-Identifier: Apache-2.0
#include "connection.h"

#include <chrono>
#include <cstdio>

#include "common/read_file.h"
#include "grpc_code_name.h"

namespace cpmctl {

std::shared_ptr<grpc::Channel> make_channel(const GlobalOptions& options, std::string* error) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(256 << 20);
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (!options.tls_ca.empty()) {
    auto pem = cpm::core::read_whole_file(options.tls_ca);
    if (!pem.ok()) {
      *error = "cannot read the TLS root certificate (--tls-ca / CPM_TLS_CA): " +
               std::string(pem.status().message());
      return nullptr;
    }
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = std::move(*pem);
    if (!options.tls_cert.empty()) {
      auto chain = cpm::core::read_whole_file(options.tls_cert);
      auto key = cpm::core::read_whole_file(options.tls_key);
      if (!chain.ok() || !key.ok()) {
        *error = "cannot read the client certificate or key (--tls-cert / --tls-key): " +
                 std::string((chain.ok() ? key.status() : chain.status()).message());
        return nullptr;
      }
      ssl.pem_cert_chain = std::move(*chain);
      ssl.pem_private_key = std::move(*key);
    }
    credentials = grpc::SslCredentials(ssl);
  }
  return grpc::CreateCustomChannel(options.server, credentials, args);
}

std::unique_ptr<grpc::ClientContext> make_stream_context(const GlobalOptions& options) {
  auto context = std::make_unique<grpc::ClientContext>();
  if (!options.token.empty()) context->AddMetadata("authorization", "Bearer " + options.token);
  return context;
}

std::unique_ptr<grpc::ClientContext> make_context(const GlobalOptions& options) {
  auto context = make_stream_context(options);
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::milliseconds(static_cast<int64_t>(options.timeout_seconds * 1000)));
  return context;
}

namespace {

// The daemon's message on one line: a list of bad records comes as "summary\n  line 3: ...".
std::string one_line(const std::string& message) {
  std::string out;
  for (size_t i = 0; i < message.size(); ++i) {
    if (message[i] != '\n') {
      out += message[i];
      continue;
    }
    while (i + 1 < message.size() && message[i + 1] == ' ') ++i;
    out += "; ";
  }
  return out;
}

}  // namespace

int report_error(const grpc::Status& status, const std::string& server, const std::string& what) {
  const grpc::StatusCode code = status.error_code();
  const std::string message = one_line(status.error_message());
  if (code == grpc::StatusCode::UNAVAILABLE || code == grpc::StatusCode::DEADLINE_EXCEEDED) {
    std::fprintf(stderr,
                 "cpmctl: cannot reach cpmd at %s (%s: %s); is it running? Set --server or "
                 "CPM_SERVER to its HOST:PORT\n",
                 server.c_str(), cpm::grpc_code_name(code), message.c_str());
    return kExitUnreachable;
  }
  std::fprintf(stderr, "cpmctl: %s failed: %s: %s\n", what.c_str(), cpm::grpc_code_name(code),
               message.c_str());
  return kExitServerError;
}

}  // namespace cpmctl
