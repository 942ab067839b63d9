// SPDX-License-Identifier: Apache-2.0
#include "common/guard.h"

#include <ATen/ops/matmul.h>
#include <ATen/ops/ones.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include <stdexcept>

namespace cpm::core {
namespace {

TEST(Guard, PassesThroughStatus) {
  EXPECT_TRUE(guarded("x", [] { return absl::OkStatus(); }).ok());
  const absl::Status s = guarded("x", [] { return absl::NotFoundError("gone"); });
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s.message(), "gone");
}

TEST(Guard, MapsOutOfMemoryToResourceExhausted) {
  const absl::Status s = guarded("decoding batch", []() -> absl::Status {
    TORCH_CHECK_WITH(OutOfMemoryError, false, "CUDA out of memory. Tried to allocate 2.00 GiB");
    return absl::OkStatus();
  });
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(s.message().find("decoding batch: device out of memory: CUDA out of memory"),
            std::string::npos)
      << s.message();
}

TEST(Guard, MapsTorchErrorsToInternalWithoutBacktrace) {
  const absl::Status s = guarded("forward", []() -> absl::Status {
    at::matmul(at::ones({2, 3}), at::ones({2, 3}));  // shape mismatch: LibTorch throws c10::Error
    return absl::OkStatus();
  });
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(s.message().rfind("forward: ", 0), 0u) << s.message();
  EXPECT_EQ(s.message().find("frame #"), std::string::npos) << s.message();
}

TEST(Guard, MapsStandardExceptions) {
  EXPECT_EQ(guarded("a", []() -> absl::Status { throw std::invalid_argument("bad"); }).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(guarded("a", []() -> absl::Status { throw std::out_of_range("far"); }).code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(guarded("a", []() -> absl::Status { throw std::runtime_error("boom"); }).message(),
            "a: boom");
  EXPECT_EQ(guarded("a", []() -> absl::Status { throw 42; }).code(), absl::StatusCode::kInternal);
}

}  // namespace
}  // namespace cpm::core
