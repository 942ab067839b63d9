// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "auth_tokens.h"

namespace cpm::server {

// Who may call a method.
enum class Access { kOpen, kInference, kAdmin };

// The access a gRPC method needs, from its full name ("/cpm.v1.Ocr/Recognize"):
//   open       grpc.health.v1.Health: Kubernetes' gRPC probes (and Docker's HEALTHCHECK through
//              `cpmctl health`) cannot send a token, and health says nothing a client could use
//              against the daemon;
//   inference  cpm.v1.Ocr, cpm.v1.Admin/GetInfo, server reflection (v1 and v1alpha);
//   admin      everything else: cpm.v1.Training, cpm.v1.Adapters, and any method not listed
//              here, so that a service added later is closed until someone opens it here.
Access required_access(std::string_view method);

// What authorize() decided. `token` is the caller's token when one was valid (also on
// PERMISSION_DENIED), else null.
struct AuthDecision {
  absl::Status status;
  const Token* token = nullptr;
};

// Decides one call from its method and the values of its "authorization" metadata:
//   OK                 the method is open and no token was sent, or a valid token's role suffices;
//   UNAUTHENTICATED    a token is needed and none was sent; the header is not "Bearer <token>";
//                      more than one was sent; or the token is not in `tokens` (also on open
//                      methods: a client with a wrong token learns it at its first call);
//   PERMISSION_DENIED  a valid inference token called an admin method.
// Messages say what to send and name the role needed; they never quote a token.
AuthDecision authorize(const TokenTable& tokens, std::string_view method,
                       const std::vector<std::string_view>& authorization);

}  // namespace cpm::server
