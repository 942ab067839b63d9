// SPDX-License-Identifier: Apache-2.0
#include "ocr_conversion.h"

#include <gmock/gmock.h>
#include <google/protobuf/util/time_util.h>
#include <gtest/gtest.h>

#include "runtime/ocr_request.h"

namespace cpm::server {
namespace {

using google::protobuf::util::TimeUtil;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
namespace runtime = core::runtime;

TEST(OcrConversion, UnsetFieldsStayUnsetForTheEngineDefaults) {
  cpm::v1::RecognizeRequest request;
  request.set_image("png bytes");
  auto r = to_ocr_request(request);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->image, "png bytes");
  EXPECT_EQ(r->adapter, "");
  EXPECT_FALSE(r->prompt.has_value());
  EXPECT_FALSE(r->max_slice_nums.has_value());
  EXPECT_EQ(r->decoding.strategy, runtime::DecodingStrategy::kGreedy);
  EXPECT_FALSE(r->decoding.max_new_tokens || r->decoding.temperature || r->decoding.top_k ||
               r->decoding.top_p || r->decoding.repetition_penalty || r->decoding.num_beams ||
               r->decoding.seed);
  EXPECT_FALSE(r->deadline.has_value());
  EXPECT_EQ(r->cancellation, nullptr);
}

TEST(OcrConversion, EveryFieldIsCarriedOver) {
  cpm::v1::RecognizeRequest request;
  request.set_adapter("ocr-v2");
  request.set_prompt("");  // set but empty: the image alone
  request.set_max_slice_nums(4);
  cpm::v1::DecodingOptions* d = request.mutable_decoding();
  d->set_strategy(cpm::v1::DECODING_STRATEGY_SAMPLING);
  d->set_max_new_tokens(17);
  d->set_min_new_tokens(0);
  d->set_temperature(0.5);
  d->set_top_k(0);
  d->set_top_p(0.9);
  d->set_repetition_penalty(1.1);
  d->set_num_beams(2);
  d->set_seed(12345678901234ULL);
  auto r = to_ocr_request(request);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->adapter, "ocr-v2");
  EXPECT_EQ(r->prompt, std::optional<std::string>(""));
  EXPECT_EQ(r->max_slice_nums, 4);
  EXPECT_EQ(r->decoding.strategy, runtime::DecodingStrategy::kSampling);
  EXPECT_EQ(r->decoding.max_new_tokens, 17);
  EXPECT_EQ(r->decoding.temperature, 0.5);
  EXPECT_EQ(r->decoding.top_k, 0);
  EXPECT_EQ(r->decoding.top_p, 0.9);
  EXPECT_EQ(r->decoding.repetition_penalty, 1.1);
  EXPECT_EQ(r->decoding.num_beams, 2);
  EXPECT_EQ(r->decoding.seed, 12345678901234ULL);
  d->set_strategy(cpm::v1::DECODING_STRATEGY_BEAM);
  EXPECT_EQ(to_ocr_request(request)->decoding.strategy, runtime::DecodingStrategy::kBeam);
}

TEST(OcrConversion, UnsupportedOptionsAreInvalid) {
  cpm::v1::RecognizeRequest request;
  request.mutable_decoding()->set_min_new_tokens(3);
  auto r = to_ocr_request(request);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("min_new_tokens 3 is not supported"));
  request.mutable_decoding()->set_min_new_tokens(-1);
  EXPECT_EQ(to_ocr_request(request).status().code(), absl::StatusCode::kInvalidArgument);
  request.mutable_decoding()->clear_min_new_tokens();
  request.mutable_decoding()->set_strategy(static_cast<cpm::v1::DecodingStrategy>(42));
  r = to_ocr_request(request);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("decoding.strategy 42"));
}

TEST(OcrConversion, ResultAndDeltas) {
  runtime::OcrResult result;
  result.text = "\\frac{a}{b}";
  result.finish = core::serve::FinishReason::kStop;
  result.prompt_tokens = 120;
  result.generated_tokens = 9;
  result.num_image_slices = 3;
  result.batch_size = 4;
  result.adapter = "ocr-v2";
  result.timings.queue = std::chrono::microseconds(1500);
  result.timings.prefill = std::chrono::milliseconds(20);
  result.timings.decode = std::chrono::seconds(2) + std::chrono::nanoseconds(7);
  result.timings.total = std::chrono::seconds(3);
  cpm::v1::RecognizeResponse out;
  to_proto(result, &out);
  EXPECT_EQ(out.text(), "\\frac{a}{b}");
  EXPECT_EQ(out.finish_reason(), cpm::v1::FINISH_REASON_STOP);
  EXPECT_EQ(out.prompt_tokens(), 120);
  EXPECT_EQ(out.completion_tokens(), 9);
  EXPECT_EQ(out.num_image_slices(), 3);
  EXPECT_EQ(out.batch_size(), 4);
  EXPECT_EQ(out.adapter(), "ocr-v2");
  EXPECT_EQ(TimeUtil::DurationToNanoseconds(out.timings().queue()), 1500000);
  EXPECT_EQ(TimeUtil::DurationToNanoseconds(out.timings().prefill()), 20000000);
  EXPECT_EQ(out.timings().decode().seconds(), 2);
  EXPECT_EQ(out.timings().decode().nanos(), 7);
  EXPECT_EQ(out.timings().total().seconds(), 3);
  result.finish = core::serve::FinishReason::kLength;
  to_proto(result, &out);
  EXPECT_EQ(out.finish_reason(), cpm::v1::FINISH_REASON_LENGTH);

  cpm::v1::TextDelta delta;
  to_proto(runtime::TextDelta{"x^", {87, 61}}, &delta);
  EXPECT_EQ(delta.text(), "x^");
  EXPECT_THAT(delta.token_ids(), ElementsAre(87, 61));
}

}  // namespace
}  // namespace cpm::server
