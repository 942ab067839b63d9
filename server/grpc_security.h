// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <grpcpp/security/server_credentials.h>
#include <grpcpp/support/status.h>

#include <functional>
#include <memory>
#include <optional>
#include <string_view>

#include "absl/status/statusor.h"
#include "auth_tokens.h"
#include "config.h"
#include "tls_files.h"

namespace cpm::server {

// How the gRPC port is secured: TLS or plaintext, client certificates (mutual TLS), and bearer
// tokens (server/auth.h decides each call). Loaded once at start-up, then only read.
//
// Tokens are checked by a gRPC auth metadata processor, which runs in gRPC's core when a call's
// headers arrive, before the call reaches any handler or interceptor. So a refused call never
// runs (also on streaming methods), and it answers UNAUTHENTICATED / PERMISSION_DENIED with
// auth.h's message. The token is removed from the call's metadata once accepted.
class GrpcSecurity {
 public:
  // Called for each call the processor refuses, from gRPC's threads: the full method name and
  // the code. The call never reaches the interceptors, so this is how the metrics see it.
  using RefusalHook = std::function<void(std::string_view method, grpc::StatusCode code)>;

  // Reads the TLS files (tls_files.h) and the tokens (auth_tokens_file, then admin_token and
  // inference_token from the environment). With TLS, gRPC then tries the certificate and key (and
  // the client CA) on a throwaway listener on an ephemeral loopback port, so that a key that does
  // not belong to its certificate is an error here, naming the files, instead of a port that
  // cannot be opened. Errors are INVALID_ARGUMENT or NOT_FOUND, naming the key, the file and the
  // fix.
  static absl::StatusOr<GrpcSecurity> load(const DaemonConfig& config);

  // Credentials for ServerBuilder::AddListeningPort: plaintext or TLS, with the token processor
  // when there are tokens. `on_refused` may be empty.
  std::shared_ptr<grpc::ServerCredentials> credentials(RefusalHook on_refused) const;

  bool tls() const { return tls_.has_value(); }
  bool mutual_tls() const { return tls_.has_value() && !tls_->client_ca.empty(); }
  const TokenTable& tokens() const { return *tokens_; }

 private:
  std::optional<TlsFiles> tls_;
  // Shared with the processors of the credentials handed out, which gRPC may keep alive a little
  // past this object.
  std::shared_ptr<const TokenTable> tokens_;
};

}  // namespace cpm::server
