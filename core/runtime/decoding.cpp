// SPDX-License-Identifier: Apache-2.0
#include "runtime/decoding.h"

#include <random>

#include "absl/strings/str_cat.h"

namespace cpm::core::runtime {
namespace {

constexpr const char* strategy_name(DecodingStrategy s) {
  switch (s) {
    case DecodingStrategy::kGreedy:
      return "greedy";
    case DecodingStrategy::kSampling:
      return "sampling";
    case DecodingStrategy::kBeam:
      return "beam";
  }
  return "?";
}

absl::Status unused(const char* field, DecodingStrategy s) {
  return absl::InvalidArgumentError(
      absl::StrCat("decoding: ", field, " is not used by ", strategy_name(s), " decoding"));
}

}  // namespace

absl::StatusOr<ResolvedDecoding> resolve_decoding(const DecodingOptions& o,
                                                  const io::GenerationConfig& defaults,
                                                  const DecodingLimits& limits) {
  ResolvedDecoding r;
  r.max_new_tokens = o.max_new_tokens.value_or(defaults.max_new_tokens.value_or(2048));
  if (r.max_new_tokens < 1 || r.max_new_tokens > limits.max_new_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("decoding: max_new_tokens ", r.max_new_tokens,
                                                   " is outside [1, ", limits.max_new_tokens, "]"));
  }
  if (o.repetition_penalty && !(*o.repetition_penalty > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("decoding: repetition_penalty ", *o.repetition_penalty, " must be > 0"));
  }
  const bool sampling = o.strategy == DecodingStrategy::kSampling;
  if (!sampling) {
    if (o.temperature) return unused("temperature", o.strategy);
    if (o.top_k) return unused("top_k", o.strategy);
    if (o.top_p) return unused("top_p", o.strategy);
    if (o.seed) return unused("seed", o.strategy);
  }
  if (o.strategy != DecodingStrategy::kBeam && o.num_beams) return unused("num_beams", o.strategy);

  switch (o.strategy) {
    case DecodingStrategy::kGreedy: {
      const double penalty = o.repetition_penalty.value_or(1.0);
      if (penalty == 1.0) {
        r.kind = DecodeKind::kGreedy;
      } else {
        r.kind = DecodeKind::kSampled;
        r.sampling = {.temperature = 1.0, .top_k = 1, .top_p = 1.0, .repetition_penalty = penalty};
      }
      break;
    }
    case DecodingStrategy::kSampling: {
      r.kind = DecodeKind::kSampled;
      const serve::SamplingOptions chat;  // chat()'s defaults
      r.sampling.temperature =
          o.temperature.value_or(defaults.temperature.value_or(chat.temperature));
      r.sampling.top_k = o.top_k.value_or(defaults.top_k.value_or(chat.top_k));
      r.sampling.top_p = o.top_p.value_or(defaults.top_p.value_or(chat.top_p));
      r.sampling.repetition_penalty = o.repetition_penalty.value_or(
          defaults.repetition_penalty.value_or(chat.repetition_penalty));
      if (!(r.sampling.temperature > 0)) {
        return absl::InvalidArgumentError(
            absl::StrCat("decoding: temperature ", r.sampling.temperature, " must be > 0"));
      }
      if (r.sampling.top_k < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("decoding: top_k ", r.sampling.top_k, " must be >= 0"));
      }
      if (!(r.sampling.top_p > 0 && r.sampling.top_p <= 1)) {
        return absl::InvalidArgumentError(
            absl::StrCat("decoding: top_p ", r.sampling.top_p, " is outside (0, 1]"));
      }
      r.seed = o.seed ? *o.seed : (uint64_t{std::random_device{}()} << 32) | std::random_device{}();
      break;
    }
    case DecodingStrategy::kBeam: {
      r.kind = DecodeKind::kBeam;
      r.beam.num_beams = o.num_beams.value_or(r.beam.num_beams);
      r.beam.repetition_penalty = o.repetition_penalty.value_or(r.beam.repetition_penalty);
      if (r.beam.num_beams < 1 || r.beam.num_beams > limits.max_num_beams) {
        return absl::InvalidArgumentError(absl::StrCat("decoding: num_beams ", r.beam.num_beams,
                                                       " is outside [1, ", limits.max_num_beams,
                                                       "]"));
      }
      break;
    }
  }
  return r;
}

}  // namespace cpm::core::runtime
