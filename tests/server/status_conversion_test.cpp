// SPDX-License-Identifier: Apache-2.0
#include "status_conversion.h"

#include <gtest/gtest.h>

#include "grpc_code_name.h"

namespace cpm::server {
namespace {

TEST(StatusConversion, KeepsCodeAndMessage) {
  EXPECT_TRUE(to_grpc_status(absl::OkStatus()).ok());
  const grpc::Status s = to_grpc_status(absl::ResourceExhaustedError("queue full (64 waiting)"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(s.error_message(), "queue full (64 waiting)");
  for (int code = 1; code <= 16; ++code) {
    const absl::Status in(static_cast<absl::StatusCode>(code), "m");
    EXPECT_EQ(static_cast<int>(to_grpc_status(in).error_code()), code);
  }
}

TEST(StatusConversion, TruncatesLongMessages) {
  const grpc::Status s = to_grpc_status(absl::InternalError(std::string(5000, 'x')));
  EXPECT_EQ(s.error_message().size(), 1024u);
  EXPECT_EQ(s.error_message().substr(1021), "...");
}

TEST(GrpcCodeName, NamesEveryCode) {
  EXPECT_STREQ(grpc_code_name(grpc::StatusCode::OK), "OK");
  EXPECT_STREQ(grpc_code_name(grpc::StatusCode::INVALID_ARGUMENT), "INVALID_ARGUMENT");
  EXPECT_STREQ(grpc_code_name(grpc::StatusCode::UNAUTHENTICATED), "UNAUTHENTICATED");
  EXPECT_STREQ(grpc_code_name(static_cast<grpc::StatusCode>(99)), "UNKNOWN");
}

}  // namespace
}  // namespace cpm::server
