// SPDX-License-Identifier: Apache-2.0
#include "auth.h"

#include "absl/strings/str_cat.h"

namespace cpm::server {
namespace {

// "/cpm.v1.Ocr/Recognize" -> "cpm.v1.Ocr/Recognize", for messages.
std::string display_name(std::string_view method) {
  return std::string(method.starts_with('/') ? method.substr(1) : method);
}

// RFC 6750: the scheme is case-insensitive and followed by one space.
constexpr std::string_view kScheme = "bearer ";

bool has_bearer_scheme(std::string_view header) {
  if (header.size() <= kScheme.size()) return false;
  for (size_t i = 0; i < kScheme.size(); ++i) {
    const char c = header[i];
    if ((c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c) != kScheme[i]) return false;
  }
  return true;
}

}  // namespace

Access required_access(std::string_view method) {
  if (method.starts_with("/grpc.health.v1.Health/")) return Access::kOpen;
  if (method.starts_with("/cpm.v1.Ocr/") || method == "/cpm.v1.Admin/GetInfo" ||
      method.starts_with("/grpc.reflection.v1alpha.ServerReflection/") ||
      method.starts_with("/grpc.reflection.v1.ServerReflection/")) {
    return Access::kInference;
  }
  return Access::kAdmin;
}

AuthDecision authorize(const TokenTable& tokens, std::string_view method,
                       const std::vector<std::string_view>& authorization) {
  const Access access = required_access(method);
  if (authorization.empty()) {
    if (access == Access::kOpen) return {absl::OkStatus()};
    return {absl::UnauthenticatedError(
        absl::StrCat(display_name(method), " needs a bearer token: send the metadata "
                     "'authorization: Bearer <token>' (cpmctl: --token)"))};
  }
  if (authorization.size() > 1) {
    return {absl::UnauthenticatedError(
        "more than one 'authorization' metadata entry; send exactly one 'Bearer <token>'")};
  }
  const std::string_view header = authorization.front();
  if (!has_bearer_scheme(header)) {
    return {absl::UnauthenticatedError(
        "the 'authorization' metadata must be 'Bearer <token>'")};
  }
  const Token* token = tokens.find(header.substr(kScheme.size()));
  if (token == nullptr) {
    return {absl::UnauthenticatedError(
        "the bearer token is not valid: it matches none of cpmd's tokens (check the value, "
        "and that cpmd was restarted after the tokens changed)")};
  }
  if (access == Access::kAdmin && token->role != Role::kAdmin) {
    return {absl::PermissionDeniedError(absl::StrCat(
                display_name(method), " needs a token with role admin; token '", token->name,
                "' has role ", role_name(token->role))),
            token};
  }
  return {absl::OkStatus(), token};
}

}  // namespace cpm::server
