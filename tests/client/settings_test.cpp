// SPDX-License-Identifier: Apache-2.0
#include "settings.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <map>

#include "test_util.h"

namespace cpmctl {
namespace {

using ::testing::HasSubstr;

// An environment of our own: XDG_CONFIG_HOME points into a temp dir.
class SettingsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::filesystem::create_directories(dir_.path() / "cpmctl");
    env_["XDG_CONFIG_HOME"] = dir_.path().string();
  }
  EnvLookup env() const {
    return [this](const std::string& name) -> std::optional<std::string> {
      const auto it = env_.find(name);
      if (it == env_.end()) return std::nullopt;
      return it->second;
    };
  }
  std::string write_config(const std::string& json) { return dir_.write("cpmctl/config.json", json); }
  absl::StatusOr<GlobalOptions> resolve(const GlobalFlags& flags = {}) {
    return resolve_settings(flags, env(), &warning_);
  }

  cpm::testing::TempDir dir_;
  std::map<std::string, std::string> env_;
  std::string warning_;
};

TEST_F(SettingsTest, DefaultsWithoutAnySource) {
  auto o = resolve();
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->server, "127.0.0.1:50051");
  EXPECT_EQ(o->token, "");
  EXPECT_EQ(o->tls_ca, "");
  EXPECT_EQ(o->timeout_seconds, 10);
  EXPECT_EQ(o->config_file, "");
}

TEST_F(SettingsTest, FlagBeatsEnvironmentBeatsFileBeatsDefault) {
  write_config(R"({"server": "file:1", "token": "file-token", "tls_ca": "/file/ca.pem", "timeout": 42})");
  auto o = resolve();
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->server, "file:1");
  EXPECT_EQ(o->token, "file-token");
  EXPECT_EQ(o->tls_ca, "/file/ca.pem");
  EXPECT_EQ(o->timeout_seconds, 42);
  EXPECT_EQ(o->config_file, dir_.file("cpmctl/config.json"));

  env_["CPM_SERVER"] = "env:2";
  env_["CPM_TOKEN"] = "env-token";
  env_["CPM_TLS_CA"] = "/env/ca.pem";
  o = resolve();
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->server, "env:2");
  EXPECT_EQ(o->token, "env-token");
  EXPECT_EQ(o->tls_ca, "/env/ca.pem");
  EXPECT_EQ(o->timeout_seconds, 42);  // no environment variable for it

  GlobalFlags flags;
  flags.server = "flag:3";
  flags.token = "flag-token";
  flags.tls_ca = "/flag/ca.pem";
  flags.timeout_seconds = 5;
  o = resolve(flags);
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->server, "flag:3");
  EXPECT_EQ(o->token, "flag-token");
  EXPECT_EQ(o->tls_ca, "/flag/ca.pem");
  EXPECT_EQ(o->timeout_seconds, 5);
}

TEST_F(SettingsTest, HomeConfigWhenNoXdgAndRelativeCaIsBesideTheFile) {
  env_.erase("XDG_CONFIG_HOME");
  env_["HOME"] = dir_.path().string();
  std::filesystem::create_directories(dir_.path() / ".config/cpmctl");
  dir_.write(".config/cpmctl/config.json", R"({"tls_ca": "certs/ca.pem"})");
  auto o = resolve();
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->tls_ca, dir_.file(".config/cpmctl/certs/ca.pem"));
}

TEST_F(SettingsTest, AClientCertificateComesWithItsKeyAndACaFromAnySource) {
  write_config(R"({"tls_ca": "ca.pem", "tls_cert": "me.crt", "tls_key": "me.key"})");
  auto o = resolve();
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->tls_cert, dir_.file("cpmctl/me.crt"));  // beside the file
  EXPECT_EQ(o->tls_key, dir_.file("cpmctl/me.key"));
  env_["CPM_TLS_CERT"] = "/env/me.crt";
  env_["CPM_TLS_KEY"] = "/env/me.key";
  GlobalFlags flags;
  flags.tls_key = "/flag/me.key";
  o = resolve(flags);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->tls_cert, "/env/me.crt");
  EXPECT_EQ(o->tls_key, "/flag/me.key");

  write_config("{}");
  env_.erase("CPM_TLS_KEY");
  EXPECT_THAT(resolve().status().message(), HasSubstr("give both --tls-cert and --tls-key"));
  env_["CPM_TLS_KEY"] = "/env/me.key";
  EXPECT_THAT(resolve().status().message(), HasSubstr("give --tls-ca too"));
}

TEST_F(SettingsTest, BadConfigFilesNameTheFileAndTheKey) {
  write_config(R"({"server": "x:1", "tokn": "oops"})");
  auto o = resolve();
  EXPECT_TRUE(absl::IsInvalidArgument(o.status()));
  EXPECT_THAT(o.status().message(), HasSubstr("config.json: unknown key \"tokn\""));

  write_config(R"({"timeout": "soon"})");
  EXPECT_THAT(resolve().status().message(), HasSubstr("\"timeout\" must be a positive number"));
  write_config(R"({"server": 50051})");
  EXPECT_THAT(resolve().status().message(), HasSubstr("\"server\" must be a string"));
  write_config("server: x");
  EXPECT_THAT(resolve().status().message(), HasSubstr("not a JSON object"));
}

TEST_F(SettingsTest, WarnsWhenOthersCanReadAToken) {
  const std::string path = write_config(R"({"token": "secret"})");
  chmod(path.c_str(), 0644);
  ASSERT_TRUE(resolve().ok());
  EXPECT_THAT(warning_, HasSubstr("chmod 600"));
  EXPECT_THAT(warning_, ::testing::Not(HasSubstr("secret")));
  warning_.clear();
  chmod(path.c_str(), 0600);
  ASSERT_TRUE(resolve().ok());
  EXPECT_EQ(warning_, "");
}

}  // namespace
}  // namespace cpmctl
