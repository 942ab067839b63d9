// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace cpm::server {

// What a bearer token may call (server/auth.h maps methods to roles). kAdmin may call everything
// kInference may.
enum class Role { kInference, kAdmin };

// "inference" or "admin", as the tokens file spells them.
const char* role_name(Role role);

// One accepted token: a name for logs and error messages, its role, and the SHA-256 of its value.
// The value itself is never kept.
struct Token {
  std::string name;
  Role role = Role::kInference;
  std::array<uint8_t, 32> sha256{};
};

// The bearer tokens cpmd accepts. Built at start-up, then only read: find() is thread-safe.
//
// The tokens file (config key auth_tokens_file) is one JSON object:
//   {"tokens": [{"name": "ci",           "role": "admin",     "sha256": "<64 hex digits>"},
//               {"name": "ocr-frontend", "role": "inference", "token":  "<the value>"}]}
// "sha256" is the digest of the token's bytes (`printf %s "$TOKEN" | sha256sum`), which keeps the
// value out of the file; "token" gives the value itself. Values are at least 16 visible ASCII
// characters (`openssl rand -hex 32` makes a good one). Names are unique, and so are tokens.
class TokenTable {
 public:
  // Errors are INVALID_ARGUMENT naming `source` (the file), the entry and the fix; they never
  // quote a token.
  static absl::StatusOr<TokenTable> parse(std::string_view json_text, const std::string& source);
  // As parse(); NOT_FOUND when the file cannot be read.
  static absl::StatusOr<TokenTable> load_file(const std::string& path);

  // Adds a token given by value (cpmd takes them from the environment). `source` names where it
  // came from in errors ("CPMD_ADMIN_TOKEN"); it is also the token's name.
  absl::Status add_value(const std::string& source, Role role, std::string_view value);

  // The token with this value, or null. Each entry's digest is compared with the digest of
  // `value` in constant time, and every entry is compared, so the time taken tells nothing about
  // which entry, or how much of one, matched.
  const Token* find(std::string_view value) const;

  bool empty() const { return tokens_.empty(); }
  size_t count(Role role) const;

 private:
  // Rejects a name or digest already present; `where` leads the error message.
  absl::Status add(Token token, const std::string& where);

  std::vector<Token> tokens_;
};

}  // namespace cpm::server
