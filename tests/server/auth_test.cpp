// SPDX-License-Identifier: Apache-2.0
// Bearer tokens: the tokens file, environment tokens, the method -> role table and the decision.
#include "auth.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "auth_tokens.h"
#include "test_util.h"

namespace cpm::server {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kAdminValue[] = "admin-token-0123456789abcdef";
constexpr char kInferenceValue[] = "inference-token-0123456789abcdef";
// Given to the table by its SHA-256 only (`printf %s hashed-token-fedcba9876543210 | sha256sum`).
constexpr char kHashedValue[] = "hashed-token-fedcba9876543210";
constexpr char kHashedDigest[] = "d264edcb6b6f6864c49feb0924913826113ca9f271009538c86fa4111d3402cc";

std::string tokens_file(const std::string& entries) {
  return "{\"tokens\": [" + entries + "]}";
}

TokenTable table() {
  auto t = TokenTable::parse(
      tokens_file(std::string(R"({"name": "ci", "role": "admin", "token": ")") + kAdminValue +
                  R"("}, {"name": "frontend", "role": "inference", "token": ")" +
                  kInferenceValue + R"("}, {"name": "hashed", "role": "inference", "sha256": ")" +
                  kHashedDigest + "\"}"),
      "tokens.json");
  EXPECT_TRUE(t.ok()) << t.status();
  return *std::move(t);
}

absl::Status parse_error(const std::string& text) {
  auto t = TokenTable::parse(text, "/etc/cpmd/tokens.json");
  EXPECT_FALSE(t.ok());
  if (t.ok()) return absl::OkStatus();
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(t.status().message(), HasSubstr("/etc/cpmd/tokens.json"));
  return t.status();
}

TEST(TokenTable, FindsTokensGivenByValueAndByDigest) {
  const TokenTable t = table();
  EXPECT_EQ(t.count(Role::kAdmin), 1u);
  EXPECT_EQ(t.count(Role::kInference), 2u);
  const Token* admin = t.find(kAdminValue);
  ASSERT_NE(admin, nullptr);
  EXPECT_EQ(admin->name, "ci");
  EXPECT_EQ(admin->role, Role::kAdmin);
  const Token* hashed = t.find(kHashedValue);
  ASSERT_NE(hashed, nullptr);
  EXPECT_EQ(hashed->name, "hashed");
  EXPECT_EQ(hashed->role, Role::kInference);
  EXPECT_EQ(t.find(kInferenceValue)->name, "frontend");
}

TEST(TokenTable, RefusesNearMisses) {
  const TokenTable t = table();
  const std::string admin = kAdminValue;
  EXPECT_EQ(t.find(""), nullptr);
  EXPECT_EQ(t.find(admin.substr(0, admin.size() - 1)), nullptr);
  EXPECT_EQ(t.find(admin + "0"), nullptr);
  EXPECT_EQ(t.find("Admin-token-0123456789abcdef"), nullptr);
  EXPECT_EQ(t.find(kHashedDigest), nullptr);  // the digest is not the token
}

TEST(TokenTable, DigestsAreCaseInsensitiveHex) {
  std::string upper = kHashedDigest;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  auto t = TokenTable::parse(
      tokens_file(R"({"name": "h", "role": "admin", "sha256": ")" + upper + "\"}"), "f");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_NE(t->find(kHashedValue), nullptr);
}

TEST(TokenTable, FileErrorsNameTheEntryAndTheFix) {
  EXPECT_THAT(parse_error("{\"tokens\": [").message(), HasSubstr("not valid JSON"));
  EXPECT_THAT(parse_error("[]").message(), HasSubstr("must be {\"tokens\""));
  EXPECT_THAT(parse_error(R"({"tokens": [], "extra": 1})").message(),
              HasSubstr("must be {\"tokens\""));
  EXPECT_THAT(parse_error(tokens_file("")).message(), HasSubstr("holds no tokens"));
  EXPECT_THAT(parse_error(tokens_file("1")).message(), HasSubstr("entry 1"));
  EXPECT_THAT(
      parse_error(tokens_file(R"({"name": "a", "role": "admin", "sha256": ")" +
                              std::string(kHashedDigest) + R"(", "rol": "x"})"))
          .message(),
      AllOf(HasSubstr("entry 1"), HasSubstr("unknown key 'rol'")));
  EXPECT_THAT(parse_error(tokens_file(R"({"role": "admin", "token": "x"})")).message(),
              HasSubstr("\"name\" must be a non-empty string"));
  EXPECT_THAT(parse_error(tokens_file(R"({"name": "a", "token": "0123456789abcdefgh"})")).message(),
              AllOf(HasSubstr("entry 1 ('a')"), HasSubstr("\"role\" is missing")));
  EXPECT_THAT(
      parse_error(tokens_file(R"({"name": "a", "role": "root", "token": "0123456789abcdefgh"})"))
          .message(),
      HasSubstr("\"role\" must be \"admin\" or \"inference\""));
  EXPECT_THAT(parse_error(tokens_file(R"({"name": "a", "role": "admin"})")).message(),
              HasSubstr("exactly one of \"sha256\""));
  EXPECT_THAT(parse_error(tokens_file(R"({"name": "a", "role": "admin", "token": "0123456789abcdefgh", "sha256": ")" +
                                      std::string(kHashedDigest) + "\"}"))
                  .message(),
              HasSubstr("exactly one of \"sha256\""));
  EXPECT_THAT(
      parse_error(tokens_file(R"({"name": "a", "role": "admin", "sha256": "abc"})")).message(),
      HasSubstr("64 hex digits"));
  EXPECT_THAT(parse_error(tokens_file(R"({"name": "a", "role": "admin", "token": 12})")).message(),
              HasSubstr("\"token\" must be a string"));
}

TEST(TokenTable, WeakOrUnsendableTokensAreRefused) {
  EXPECT_THAT(parse_error(tokens_file(R"({"name": "a", "role": "admin", "token": "short"})"))
                  .message(),
              AllOf(HasSubstr("16 to 4096 characters"), HasSubstr("openssl rand -hex 32")));
  EXPECT_THAT(
      parse_error(tokens_file(R"({"name": "a", "role": "admin", "token": "with a space 0123456"})"))
          .message(),
      HasSubstr("only visible ASCII"));
  EXPECT_THAT(
      parse_error(tokens_file(R"({"name": "a", "role": "admin", "token": "0123456789abcdef\u00e9"})"))
          .message(),
      HasSubstr("only visible ASCII"));
}

TEST(TokenTable, NamesAndValuesAreUnique) {
  const std::string a = std::string(R"({"name": "a", "role": "admin", "token": ")") + kHashedValue + "\"}";
  EXPECT_THAT(parse_error(tokens_file(a + ", " + a)).message(),
              AllOf(HasSubstr("entry 2"), HasSubstr("the name 'a' is already taken")));
  // The same value twice, once in clear and once as its digest: its role would be ambiguous.
  const std::string b = std::string(R"({"name": "b", "role": "inference", "sha256": ")") +
                        kHashedDigest + "\"}";
  EXPECT_THAT(parse_error(tokens_file(a + ", " + b)).message(),
              AllOf(HasSubstr("entry 2 ('b')"), HasSubstr("the same token as 'a'")));
}

TEST(TokenTable, ErrorsNeverQuoteAToken) {
  const std::string secret = "s3cret-value-that-must-not-leak";
  for (const std::string& text :
       {std::string("{\"tokens\": [{\"name\": \"a\", \"role\": \"admin\", \"token\": \"") + secret +
            "\" oops}]}",
        std::string("{\"tokens\": [{\"name\": \"a\", \"role\": \"admin\", \"token\": \"") + secret +
            "\"}, {\"name\": \"a\", \"role\": \"admin\", \"token\": \"" + secret + "\"}]}",
        std::string("{\"tokens\": [{\"name\": \"a\", \"role\": \"admin\", \"token\": \"") +
            "short\"}]}"}) {
    EXPECT_THAT(parse_error(text).message(), AllOf(Not(HasSubstr(secret)), Not(HasSubstr("short"))))
        << text;
  }
}

TEST(TokenTable, LoadsAFileAndSaysWhenItCannot) {
  testing::TempDir dir;
  const std::string path = dir.write(
      "tokens.json", tokens_file(std::string(R"({"name": "ci", "role": "admin", "token": ")") +
                                 kAdminValue + "\"}"));
  auto t = TokenTable::load_file(path);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_NE(t->find(kAdminValue), nullptr);
  auto missing = TokenTable::load_file(dir.file("nope.json"));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(),
              AllOf(HasSubstr(dir.file("nope.json")), HasSubstr("auth_tokens_file")));
}

TEST(TokenTable, EnvironmentTokensAreNamedForTheirVariable) {
  TokenTable t = table();
  ASSERT_TRUE(t.add_value("CPMD_ADMIN_TOKEN", Role::kAdmin, "env-admin-token-0123456789").ok());
  const Token* env = t.find("env-admin-token-0123456789");
  ASSERT_NE(env, nullptr);
  EXPECT_EQ(env->name, "CPMD_ADMIN_TOKEN");
  EXPECT_EQ(env->role, Role::kAdmin);
  absl::Status weak = t.add_value("CPMD_INFERENCE_TOKEN", Role::kInference, "short");
  EXPECT_THAT(weak.message(), AllOf(HasSubstr("CPMD_INFERENCE_TOKEN"), HasSubstr("16 to 4096")));
  absl::Status dup = t.add_value("CPMD_INFERENCE_TOKEN", Role::kInference, kAdminValue);
  EXPECT_THAT(dup.message(), HasSubstr("the same token as 'ci'"));
}

TEST(RequiredAccess, HealthIsOpenInferenceServesAndEverythingElseIsAdmin) {
  EXPECT_EQ(required_access("/grpc.health.v1.Health/Check"), Access::kOpen);
  EXPECT_EQ(required_access("/grpc.health.v1.Health/Watch"), Access::kOpen);
  EXPECT_EQ(required_access("/cpm.v1.Ocr/Recognize"), Access::kInference);
  EXPECT_EQ(required_access("/cpm.v1.Ocr/RecognizeStream"), Access::kInference);
  EXPECT_EQ(required_access("/cpm.v1.Admin/GetInfo"), Access::kInference);
  EXPECT_EQ(required_access("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"),
            Access::kInference);
  EXPECT_EQ(required_access("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            Access::kInference);
  EXPECT_EQ(required_access("/cpm.v1.Adapters/LoadAdapter"), Access::kAdmin);
  EXPECT_EQ(required_access("/cpm.v1.Adapters/ListAdapters"), Access::kAdmin);
  EXPECT_EQ(required_access("/cpm.v1.Training/SubmitJob"), Access::kAdmin);
  EXPECT_EQ(required_access("/cpm.v1.Training/WatchJob"), Access::kAdmin);
  // Not listed: closed by default, and no prefix trick opens it.
  EXPECT_EQ(required_access("/cpm.v1.Admin/Shutdown"), Access::kAdmin);
  EXPECT_EQ(required_access("/cpm.v1.OcrAdmin/Anything"), Access::kAdmin);
  EXPECT_EQ(required_access("/grpc.health.v1.HealthX/Check"), Access::kAdmin);
  EXPECT_EQ(required_access(""), Access::kAdmin);
}

AuthDecision call(const TokenTable& t, std::string_view method,
                  std::vector<std::string_view> authorization) {
  return authorize(t, method, authorization);
}

TEST(Authorize, MissingMalformedOrUnknownTokensAreUnauthenticated) {
  const TokenTable t = table();
  AuthDecision d = call(t, "/cpm.v1.Ocr/Recognize", {});
  EXPECT_EQ(d.status.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(d.status.message(), AllOf(HasSubstr("cpm.v1.Ocr/Recognize needs a bearer token"),
                                        HasSubstr("authorization: Bearer <token>")));
  d = call(t, "/cpm.v1.Ocr/Recognize", {"Bearer not-a-configured-token-123"});
  EXPECT_EQ(d.status.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(d.status.message(), AllOf(HasSubstr("not valid"), Not(HasSubstr("not-a-configured"))));
  EXPECT_EQ(d.token, nullptr);
  const std::string basic = std::string("Basic ") + kAdminValue;
  for (std::string_view bad : {std::string_view(basic), std::string_view("Bearer"),
                               std::string_view("Bearer "), std::string_view(kAdminValue)}) {
    d = call(t, "/cpm.v1.Ocr/Recognize", {bad});
    EXPECT_EQ(d.status.code(), absl::StatusCode::kUnauthenticated) << bad;
    EXPECT_THAT(d.status.message(), HasSubstr("must be 'Bearer <token>'")) << bad;
  }
  const std::string admin = std::string("Bearer ") + kAdminValue;
  d = call(t, "/cpm.v1.Ocr/Recognize", {admin, admin});
  EXPECT_EQ(d.status.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(d.status.message(), HasSubstr("more than one"));
  // Two spaces: the token would start with one, which no token does.
  d = call(t, "/cpm.v1.Ocr/Recognize", {std::string("Bearer  ") + kAdminValue});
  EXPECT_EQ(d.status.code(), absl::StatusCode::kUnauthenticated);
}

TEST(Authorize, InferenceTokensCannotCallAdminMethods) {
  const TokenTable t = table();
  const std::string inference = std::string("Bearer ") + kInferenceValue;
  for (const char* method : {"/cpm.v1.Ocr/Recognize", "/cpm.v1.Ocr/RecognizeStream",
                             "/cpm.v1.Admin/GetInfo", "/grpc.health.v1.Health/Check",
                             "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"}) {
    AuthDecision d = call(t, method, {inference});
    EXPECT_TRUE(d.status.ok()) << method << " " << d.status;
    ASSERT_NE(d.token, nullptr);
    EXPECT_EQ(d.token->name, "frontend");
  }
  for (const char* method : {"/cpm.v1.Adapters/LoadAdapter", "/cpm.v1.Adapters/ExportAdapter",
                             "/cpm.v1.Training/SubmitJob", "/cpm.v1.Training/UploadDataset"}) {
    AuthDecision d = call(t, method, {inference});
    EXPECT_EQ(d.status.code(), absl::StatusCode::kPermissionDenied) << method;
    EXPECT_THAT(d.status.message(),
                AllOf(HasSubstr(std::string(method).substr(1) + " needs a token with role admin"),
                      HasSubstr("token 'frontend' has role inference"),
                      Not(HasSubstr(kInferenceValue))));
    ASSERT_NE(d.token, nullptr);
  }
}

TEST(Authorize, AdminTokensCallEverything) {
  const TokenTable t = table();
  for (const char* header : {"Bearer admin-token-0123456789abcdef",
                             "bearer admin-token-0123456789abcdef",
                             "BEARER admin-token-0123456789abcdef"}) {
    for (const char* method :
         {"/cpm.v1.Ocr/Recognize", "/cpm.v1.Admin/GetInfo", "/cpm.v1.Adapters/LoadAdapter",
          "/cpm.v1.Training/WatchJob", "/grpc.health.v1.Health/Watch", "/cpm.v1.Admin/Shutdown"}) {
      AuthDecision d = call(t, method, {header});
      EXPECT_TRUE(d.status.ok()) << header << " " << method << " " << d.status;
      ASSERT_NE(d.token, nullptr);
      EXPECT_EQ(d.token->name, "ci");
    }
  }
}

TEST(Authorize, HealthNeedsNoTokenButRefusesAWrongOne) {
  const TokenTable t = table();
  EXPECT_TRUE(call(t, "/grpc.health.v1.Health/Check", {}).status.ok());
  EXPECT_TRUE(call(t, "/grpc.health.v1.Health/Watch", {}).status.ok());
  EXPECT_EQ(call(t, "/grpc.health.v1.Health/Check", {"Bearer wrong-token-0123456789"}).status.code(),
            absl::StatusCode::kUnauthenticated);
}

}  // namespace
}  // namespace cpm::server
