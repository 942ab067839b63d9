// SPDX-License-Identifier: Apache-2.0
#include "common/logging.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace cpm::core {
namespace {

constexpr int64_t kT = 1795840043123;  // 2026-11-28T04:27:23.123Z

TEST(Logging, TextLineIsLogfmtWithQuotingOnlyWhereNeeded) {
  const std::string line = format_log_line(
      LogFormat::kText, kT, LogLevel::kInfo, "grpc listening",
      {{"addr", "127.0.0.1:50051"}, {"port", 50051}, {"path", "/a b"}, {"ok", true}});
  EXPECT_EQ(line,
            "ts=2026-11-28T04:27:23.123Z level=info msg=\"grpc listening\" addr=127.0.0.1:50051 "
            "port=50051 path=\"/a b\" ok=true");
}

TEST(Logging, TextEscapesQuotesNewlinesAndEmptyValues) {
  const std::string line = format_log_line(LogFormat::kText, kT, LogLevel::kError, "x",
                                           {{"error", "bad \"v\"\nnext"}, {"empty", ""}});
  EXPECT_NE(line.find("error=\"bad \\\"v\\\"\\nnext\""), std::string::npos) << line;
  EXPECT_NE(line.find("empty=\"\""), std::string::npos) << line;
  EXPECT_EQ(line.find('\n'), std::string::npos);
}

TEST(Logging, JsonLineParsesWithTypedValues) {
  const std::string line =
      format_log_line(LogFormat::kJson, kT, LogLevel::kWarn, "slow \"step\"",
                      {{"step", 12}, {"loss", 0.25}, {"job", "j-1\t"}, {"resumed", false}});
  const auto doc = nlohmann::json::parse(line);
  EXPECT_EQ(doc["ts"], "2026-11-28T04:27:23.123Z");
  EXPECT_EQ(doc["level"], "warn");
  EXPECT_EQ(doc["msg"], "slow \"step\"");
  EXPECT_EQ(doc["step"], 12);
  EXPECT_DOUBLE_EQ(doc["loss"].get<double>(), 0.25);
  EXPECT_EQ(doc["job"], "j-1\t");
  EXPECT_EQ(doc["resumed"], false);
}

TEST(Logging, ParsesLevelNames) {
  LogLevel level = LogLevel::kInfo;
  EXPECT_TRUE(parse_log_level("debug", &level));
  EXPECT_EQ(level, LogLevel::kDebug);
  EXPECT_TRUE(parse_log_level("error", &level));
  EXPECT_EQ(level, LogLevel::kError);
  EXPECT_FALSE(parse_log_level("verbose", &level));
  EXPECT_EQ(level, LogLevel::kError);
}

}  // namespace
}  // namespace cpm::core
