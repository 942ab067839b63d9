// SPDX-License-Identifier: Apache-2.0
#include "auth_tokens.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/sha256.h"
#include "nlohmann/json.hpp"

namespace cpm::server {
namespace {

using nlohmann::json;

// Below this a token can be guessed; `openssl rand -hex 32` gives 64 characters.
constexpr size_t kMinTokenLength = 16;
// A token travels in one HTTP/2 header; this is far below any header limit.
constexpr size_t kMaxTokenLength = 4096;

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// 64 hex digits -> 32 bytes; false on anything else.
bool parse_digest(std::string_view hex, std::array<uint8_t, 32>& out) {
  if (hex.size() != 2 * out.size()) return false;
  for (size_t i = 0; i < out.size(); ++i) {
    const int hi = hex_value(hex[2 * i]);
    const int lo = hex_value(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return true;
}

std::array<uint8_t, 32> digest_of(std::string_view value) {
  core::Sha256 hash;
  hash.update(value);
  std::array<uint8_t, 32> out{};
  parse_digest(hash.hex_digest(), out);
  return out;
}

// Visible ASCII only: a token is sent as an HTTP/2 header value after "Bearer ", where spaces and
// control characters would be cut or refused on the way.
absl::Status check_value(std::string_view value, const std::string& where) {
  if (value.size() < kMinTokenLength || value.size() > kMaxTokenLength) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": a token must have ", kMinTokenLength, " to ", kMaxTokenLength,
        " characters (it has ", value.size(), "); make one with `openssl rand -hex 32`"));
  }
  for (char c : value) {
    if (c < 0x21 || c > 0x7e) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": a token may hold only visible ASCII characters (no spaces or control "
                 "characters); make one with `openssl rand -hex 32`"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Role> parse_role(const json& value, const std::string& where) {
  if (value.is_string() && value == "admin") return Role::kAdmin;
  if (value.is_string() && value == "inference") return Role::kInference;
  return absl::InvalidArgumentError(
      absl::StrCat(where, ": \"role\" must be \"admin\" or \"inference\""));
}

// Equal in time independent of where the arrays differ.
bool digests_equal(const std::array<uint8_t, 32>& a, const std::array<uint8_t, 32>& b) {
  volatile uint8_t diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff = diff | (a[i] ^ b[i]);
  return diff == 0;
}

}  // namespace

const char* role_name(Role role) {
  switch (role) {
    case Role::kInference:
      return "inference";
    case Role::kAdmin:
      return "admin";
  }
  return "unknown";
}

absl::StatusOr<TokenTable> TokenTable::parse(std::string_view json_text,
                                             const std::string& source) {
  json doc;
  try {
    doc = json::parse(json_text);
  } catch (const json::parse_error& e) {
    // Only the position: nlohmann's message quotes the text it last read, which may be a token.
    return absl::InvalidArgumentError(absl::StrCat("tokens file ", source,
                                                   ": not valid JSON (error at byte ", e.byte, ")"));
  }
  const char* shape =
      "must be {\"tokens\": [{\"name\": ..., \"role\": \"admin\"|\"inference\", "
      "\"sha256\": ...|\"token\": ...}, ...]}";
  if (!doc.is_object() || !doc.contains("tokens") || !doc["tokens"].is_array() ||
      doc.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat("tokens file ", source, ": ", shape));
  }
  TokenTable table;
  const json& entries = doc["tokens"];
  for (size_t i = 0; i < entries.size(); ++i) {
    const json& entry = entries[i];
    std::string where = absl::StrCat("tokens file ", source, ": entry ", i + 1);
    if (!entry.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": ", shape));
    }
    for (const auto& [key, value] : entry.items()) {
      if (key != "name" && key != "role" && key != "sha256" && key != "token") {
        return absl::InvalidArgumentError(absl::StrCat(
            where, ": unknown key '", key, "' (known keys: name, role, sha256, token)"));
      }
    }
    if (!entry.contains("name") || !entry["name"].is_string() ||
        entry["name"].get<std::string>().empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": \"name\" must be a non-empty string"));
    }
    Token token;
    token.name = entry["name"].get<std::string>();
    where = absl::StrCat(where, " ('", token.name, "')");
    if (!entry.contains("role")) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": \"role\" is missing (\"admin\" or \"inference\")"));
    }
    auto role = parse_role(entry["role"], where);
    if (!role.ok()) return role.status();
    token.role = *role;
    const bool has_digest = entry.contains("sha256");
    const bool has_value = entry.contains("token");
    if (has_digest == has_value) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": give exactly one of \"sha256\" (the token's SHA-256 in hex, "
                 "`printf %s \"$TOKEN\" | sha256sum`) and \"token\" (its value)"));
    }
    if (has_digest) {
      const json& hex = entry["sha256"];
      if (!hex.is_string() || !parse_digest(hex.get<std::string>(), token.sha256)) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, ": \"sha256\" must be 64 hex digits (`printf %s \"$TOKEN\" | sha256sum`)"));
      }
    } else {
      const json& value = entry["token"];
      if (!value.is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": \"token\" must be a string"));
      }
      absl::Status s = check_value(value.get<std::string>(), where);
      if (!s.ok()) return s;
      token.sha256 = digest_of(value.get<std::string>());
    }
    absl::Status s = table.add(std::move(token), where);
    if (!s.ok()) return s;
  }
  if (table.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tokens file ", source, ": holds no tokens, which would refuse every call; add one or "
        "unset auth_tokens_file"));
  }
  return table;
}

absl::StatusOr<TokenTable> TokenTable::load_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(
        "tokens file ", path, " (auth_tokens_file): cannot be opened; does it exist and may "
        "cpmd's user read it?"));
  }
  std::stringstream text;
  text << in.rdbuf();
  return parse(text.str(), path);
}

absl::Status TokenTable::add_value(const std::string& source, Role role, std::string_view value) {
  absl::Status s = check_value(value, source);
  if (!s.ok()) return s;
  return add(Token{source, role, digest_of(value)}, source);
}

absl::Status TokenTable::add(Token token, const std::string& where) {
  for (const Token& t : tokens_) {
    if (t.name == token.name) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": the name '", token.name, "' is already taken; names are unique"));
    }
    if (t.sha256 == token.sha256) {
      // One value with two roles would make the role depend on the entry's order.
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": the same token as '", t.name, "'; give each client its own token"));
    }
  }
  tokens_.push_back(std::move(token));
  return absl::OkStatus();
}

const Token* TokenTable::find(std::string_view value) const {
  const std::array<uint8_t, 32> digest = digest_of(value);
  const Token* match = nullptr;
  for (const Token& t : tokens_) {
    if (digests_equal(t.sha256, digest)) match = &t;
  }
  return match;
}

size_t TokenTable::count(Role role) const {
  size_t n = 0;
  for (const Token& t : tokens_) n += t.role == role ? 1 : 0;
  return n;
}

}  // namespace cpm::server
