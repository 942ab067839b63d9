// SPDX-License-Identifier: Apache-2.0
#include "config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

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
  EXPECT_EQ(c->device, "auto");
  EXPECT_EQ(c->dtype, "auto");
  EXPECT_EQ(c->max_batch_size, 8);
  EXPECT_EQ(c->max_batch_wait_ms, 5);
  EXPECT_EQ(c->max_queue, 256);
  EXPECT_EQ(c->adapter_memory_budget_bytes, 0);
  EXPECT_TRUE(c->adapter_roots.empty());
  EXPECT_TRUE(c->dataset_roots.empty());
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

TEST(Config, EngineKeysFromFileAndFlags) {
  testing::TempDir dir;
  std::filesystem::create_directories(dir.path() / "a");
  std::filesystem::create_directories(dir.path() / "b");
  ConfigOverrides flags;
  flags.config_file = dir.write("cpmd.json", R"({"device": "cpu", "dtype": "bfloat16",
      "max_batch_size": 16, "max_batch_wait_ms": 0, "max_queue": 4,
      "adapter_memory_budget_bytes": 1048576, "adapter_roots": [")" + dir.file("a") + R"("]})");
  flags.max_queue = 9;
  auto c = load_config(flags);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->device, "cpu");
  EXPECT_EQ(c->dtype, "bfloat16");
  EXPECT_EQ(c->max_batch_size, 16);
  EXPECT_EQ(c->max_batch_wait_ms, 0);
  EXPECT_EQ(c->max_queue, 9);  // flag
  EXPECT_EQ(c->adapter_memory_budget_bytes, 1 << 20);
  EXPECT_EQ(c->adapter_roots, std::vector<std::string>{dir.file("a")});
  flags.adapter_roots = {dir.file("a"), dir.file("b")};  // the flag's list replaces the file's
  c = load_config(flags);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->adapter_roots.size(), 2u);
}

TEST(Config, ValidatesEngineKeys) {
  testing::TempDir dir;
  ConfigOverrides flags;
  for (const char* device : {"auto", "cpu", "cuda", "cuda:0", "cuda:12"}) {
    flags.device = device;
    EXPECT_TRUE(load_config(flags).ok()) << device;
  }
  for (const char* device : {"gpu", "cuda:", "cuda:x", "cuda:-1", "CPU", ""}) {
    flags.device = device;
    EXPECT_THAT(load_config(flags).status().message(), HasSubstr("is not one of auto, cpu, cuda"))
        << device;
  }
  flags = {};
  flags.dtype = "float16";
  EXPECT_THAT(load_config(flags).status().message(), HasSubstr("dtype 'float16'"));
  flags = {};
  flags.max_batch_size = 0;
  EXPECT_THAT(load_config(flags).status().message(), HasSubstr("max_batch_size 0 is out of range"));
  flags = {};
  flags.max_batch_wait_ms = -1;
  EXPECT_THAT(load_config(flags).status().message(), HasSubstr("max_batch_wait_ms"));
  flags = {};
  flags.max_queue = 0;
  EXPECT_THAT(load_config(flags).status().message(), HasSubstr("max_queue"));
  flags = {};
  flags.adapter_memory_budget_bytes = -5;
  EXPECT_THAT(load_config(flags).status().message(), HasSubstr("adapter_memory_budget_bytes"));
  flags = {};
  flags.adapter_roots = {dir.file("missing")};
  EXPECT_THAT(load_config(flags).status().message(), HasSubstr("is not a directory"));
  flags = {};
  flags.dataset_roots = {dir.file("missing")};
  EXPECT_THAT(load_config(flags).status().message(), HasSubstr("in dataset_roots is not a directory"));
  flags = {};
  flags.config_file = dir.write("roots.json", R"({"adapter_roots": "/srv"})");
  EXPECT_THAT(load_config(flags).status().message(),
              HasSubstr("'adapter_roots' must be a list of strings"));
  flags.config_file = dir.write("roots2.json", R"({"adapter_roots": ["/srv", 3]})");
  EXPECT_THAT(load_config(flags).status().message(),
              HasSubstr("'adapter_roots' must be a list of strings"));
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
