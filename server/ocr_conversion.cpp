// SPDX-License-Identifier: Apache-2.0
#include "ocr_conversion.h"

#include <google/protobuf/util/time_util.h>

#include "absl/strings/str_cat.h"
#include "runtime/ocr_request.h"

namespace cpm::server {
namespace {

namespace runtime = core::runtime;
using google::protobuf::util::TimeUtil;

absl::StatusOr<runtime::DecodingStrategy> to_strategy(cpm::v1::DecodingStrategy strategy) {
  switch (strategy) {
    case cpm::v1::DECODING_STRATEGY_UNSPECIFIED:
    case cpm::v1::DECODING_STRATEGY_GREEDY:
      return runtime::DecodingStrategy::kGreedy;
    case cpm::v1::DECODING_STRATEGY_SAMPLING:
      return runtime::DecodingStrategy::kSampling;
    case cpm::v1::DECODING_STRATEGY_BEAM:
      return runtime::DecodingStrategy::kBeam;
    default:
      return absl::InvalidArgumentError(absl::StrCat("decoding.strategy ",
                                                     static_cast<int>(strategy),
                                                     " is not one of GREEDY, SAMPLING, BEAM"));
  }
}

template <typename To, typename From>
std::optional<To> optional_of(bool has, From value) {
  return has ? std::optional<To>(static_cast<To>(value)) : std::nullopt;
}

void set_duration(std::chrono::nanoseconds d, google::protobuf::Duration* out) {
  *out = TimeUtil::NanosecondsToDuration(d.count());
}

}  // namespace

absl::StatusOr<runtime::OcrRequest> to_ocr_request(const cpm::v1::RecognizeRequest& request) {
  const cpm::v1::DecodingOptions& d = request.decoding();
  if (d.has_min_new_tokens() && d.min_new_tokens() != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("decoding.min_new_tokens ", d.min_new_tokens(),
                     " is not supported: cpmd stops at the first end token; leave it unset or 0"));
  }
  auto strategy = to_strategy(d.strategy());
  if (!strategy.ok()) return strategy.status();
  runtime::OcrRequest out;
  out.image = request.image();
  out.adapter = request.adapter();
  if (request.has_prompt()) out.prompt = request.prompt();
  out.max_slice_nums = optional_of<int>(request.has_max_slice_nums(), request.max_slice_nums());
  runtime::DecodingOptions& o = out.decoding;
  o.strategy = *strategy;
  o.max_new_tokens = optional_of<int>(d.has_max_new_tokens(), d.max_new_tokens());
  o.temperature = optional_of<double>(d.has_temperature(), d.temperature());
  o.top_k = optional_of<int>(d.has_top_k(), d.top_k());
  o.top_p = optional_of<double>(d.has_top_p(), d.top_p());
  o.repetition_penalty = optional_of<double>(d.has_repetition_penalty(), d.repetition_penalty());
  o.num_beams = optional_of<int>(d.has_num_beams(), d.num_beams());
  o.seed = optional_of<uint64_t>(d.has_seed(), d.seed());
  return out;
}

void to_proto(const runtime::OcrResult& result, cpm::v1::RecognizeResponse* out) {
  out->set_text(result.text);
  out->set_prompt_tokens(result.prompt_tokens);
  out->set_completion_tokens(result.generated_tokens);
  out->set_finish_reason(result.finish == core::serve::FinishReason::kStop
                             ? cpm::v1::FINISH_REASON_STOP
                             : cpm::v1::FINISH_REASON_LENGTH);
  cpm::v1::Timings* t = out->mutable_timings();
  set_duration(result.timings.queue, t->mutable_queue());
  set_duration(result.timings.prefill, t->mutable_prefill());
  set_duration(result.timings.decode, t->mutable_decode());
  set_duration(result.timings.total, t->mutable_total());
  out->set_adapter(result.adapter);
  out->set_num_image_slices(result.num_image_slices);
  out->set_batch_size(result.batch_size);
}

void to_proto(const runtime::TextDelta& delta, cpm::v1::TextDelta* out) {
  out->set_text(delta.text);
  out->mutable_token_ids()->Assign(delta.token_ids.begin(), delta.token_ids.end());
}

}  // namespace cpm::server
