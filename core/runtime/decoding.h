// SPDX-License-Identifier: Apache-2.0
//
// A request's DecodingOptions checked and resolved against the model's generation defaults into
// what the generation functions take, plus how the engine batches it.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "io/model_config.h"
#include "runtime/ocr_request.h"
#include "serve/beam_search.h"
#include "serve/sampling.h"

namespace cpm::core::runtime {

// How a request is decoded, which decides whom it can share a batch with.
enum class DecodeKind {
  kGreedy,   // generate_greedy_batch
  kSampled,  // generate_sampled_batch (also greedy with a repetition penalty, see below)
  kBeam,     // generate_beam, one request at a time
};

struct ResolvedDecoding {
  DecodeKind kind = DecodeKind::kGreedy;
  int max_new_tokens = 2048;
  // kSampled. Greedy decoding with a repetition penalty runs here as temperature 1, top_k 1,
  // top_p 1: the draw then always takes the best processed score, which is greedy search with
  // the penalty as transformers applies it (only exact ties could differ: argmax takes the first).
  serve::SamplingOptions sampling;
  uint64_t seed = 0;
  serve::BeamSearchOptions beam;  // kBeam
};

// Server-side bounds on what one request may ask for.
struct DecodingLimits {
  int max_new_tokens = 4096;  // Default: 4096
  int max_num_beams = 8;      // Default: 8
};

// INVALID_ARGUMENT naming the field for an out-of-range value or a field the strategy does not
// use. An unset seed is drawn from std::random_device.
absl::StatusOr<ResolvedDecoding> resolve_decoding(const DecodingOptions& options,
                                                  const io::GenerationConfig& defaults,
                                                  const DecodingLimits& limits);

}  // namespace cpm::core::runtime
