// SPDX-License-Identifier: Apache-2.0
#include "config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "test_util.h"

namespace cpm::server {
namespace {

using ::testing::HasSubstr;

TEST(Config, DefaultsAreLoopbackAndVar) {
  auto c = load_config({});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->listen, "127.0.0.1:50051");
  EXPECT_EQ(c->metrics_listen, "127.0.0.1:9464");
  EXPECT_EQ(c->data_dir, "./var");
  EXPECT_EQ(c->model, "");
  EXPECT_EQ(c->log_level, "info");
  EXPECT_EQ(c->max_message_bytes, 64 << 20);
}

TEST(Config, FileOverridesDefaultsAndFlagsOverrideFile) {
  testing::TempDir dir;
  ConfigOverrides flags;
  flags.config_file = dir.write("cpmd.json", R"({"listen": "0.0.0.0:7000", "data_dir": "/srv/cpm",
                                               "log_level": "debug", "max_message_bytes": 8388608})");
  flags.listen = "127.0.0.1:7001";
  auto c = load_config(flags);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->listen, "127.0.0.1:7001");  // flag
  EXPECT_EQ(c->data_dir, "/srv/cpm");      // file
  EXPECT_EQ(c->log_level, "debug");        // file
  EXPECT_EQ(c->max_message_bytes, 8 << 20);
  EXPECT_EQ(c->metrics_listen, "127.0.0.1:9464");  // default
}

TEST(Config, UnknownKeyIsAnErrorThatListsTheKnownOnes) {
  testing::TempDir dir;
  ConfigOverrides flags;
  flags.config_file = dir.write("cpmd.json", R"({"listen": "127.0.0.1:1", "lissen": "x"})");
  auto c = load_config(flags);
  ASSERT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("unknown key 'lissen'"));
  EXPECT_THAT(c.status().message(), HasSubstr("metrics_listen"));
}

TEST(Config, WrongTypesAndBadJsonAreErrors) {
  testing::TempDir dir;
  ConfigOverrides flags;
  flags.config_file = dir.write("a.json", R"({"max_message_bytes": "big"})");
  EXPECT_THAT(load_config(flags).status().message(), HasSubstr("'max_message_bytes' must be an integer"));
  flags.config_file = dir.write("b.json", R"({"listen": 5})");
  EXPECT_THAT(load_config(flags).status().message(), HasSubstr("'listen' must be a string"));
  flags.config_file = dir.write("c.json", R"({"listen": )");
  EXPECT_THAT(load_config(flags).status().message(), HasSubstr("not valid JSON"));
  flags.config_file = dir.write("d.json", R"(["listen"])");
  EXPECT_THAT(load_config(flags).status().message(), HasSubstr("one JSON object"));
  flags.config_file = dir.file("missing.json");
  EXPECT_EQ(load_config(flags).status().code(), absl::StatusCode::kNotFound);
}

TEST(Config, ValidatesAddresses) {
  ConfigOverrides flags;
  for (const char* bad : {"localhost", "127.0.0.1:", ":50051", "127.0.0.1:65536", "h:-1",
                          "h:12ab", "[::1:80"}) {
    flags.listen = bad;
    EXPECT_EQ(load_config(flags).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  flags.listen = "[::1]:0";
  EXPECT_TRUE(load_config(flags).ok());
  flags.listen = "127.0.0.1:9464";
  EXPECT_THAT(load_config(flags).status().message(), HasSubstr("different ports"));
}

TEST(Config, ParsesHostPort) {
  auto hp = parse_host_port("[::1]:50051");
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ(hp->host, "[::1]");
  EXPECT_EQ(hp->port, 50051);
  hp = parse_host_port("0.0.0.0:0");
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ(hp->port, 0);
}

TEST(Config, ValidatesLevelsAndLimits) {
  ConfigOverrides flags;
  flags.log_level = "loud";
  EXPECT_THAT(load_config(flags).status().message(), HasSubstr("log_level 'loud'"));
  flags = {};
  flags.log_format = "xml";
  EXPECT_THAT(load_config(flags).status().message(), HasSubstr("log_format 'xml'"));
  flags = {};
  flags.max_message_bytes = 1000;
  EXPECT_THAT(load_config(flags).status().message(), HasSubstr("max_message_bytes"));
  flags = {};
  flags.shutdown_grace_seconds = -1;
  EXPECT_THAT(load_config(flags).status().message(), HasSubstr("shutdown_grace_seconds"));
  flags = {};
  flags.data_dir = "";
  EXPECT_THAT(load_config(flags).status().message(), HasSubstr("data_dir"));
}

TEST(Config, ModelMustBeACheckpointDirectory) {
  testing::TempDir dir;
  ConfigOverrides flags;
  flags.model = dir.file("nope");
  EXPECT_THAT(load_config(flags).status().message(), HasSubstr("is not a directory"));
  flags.model = dir.path().string();
  EXPECT_THAT(load_config(flags).status().message(), HasSubstr("has no config.json"));
  dir.write("config.json", "{}");
  EXPECT_TRUE(load_config(flags).ok());
}

}  // namespace
}  // namespace cpm::server
