// SPDX-License-Identifier: Apache-2.0
//
// One LaTeX OCR request to the engine and its result: the core-side twin of cpm.v1.Ocr's
// RecognizeRequest / RecognizeResponse (proto/cpm/v1/ocr.proto), without protobuf.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "runtime/cancellation.h"
#include "serve/generation.h"

namespace cpm::core::runtime {

using Clock = std::chrono::steady_clock;

enum class DecodingStrategy { kGreedy, kSampling, kBeam };

// Unset fields take the model's generation defaults as MiniCPM-o's chat() does: sampling uses
// generation_config.json's temperature / top_k / top_p / repetition_penalty, else 0.7, 100, 0.8,
// 1.05; beam search uses num_beams 3 and repetition_penalty 1.2. A field that the chosen strategy
// does not use is INVALID_ARGUMENT rather than silently ignored.
struct DecodingOptions {
  DecodingStrategy strategy = DecodingStrategy::kGreedy;  // Default: greedy, the OCR default
  // Default: generation_config.json's max_new_tokens, else 2048; capped by the model's context.
  std::optional<int> max_new_tokens;
  std::optional<double> temperature;  // sampling only; > 0
  std::optional<int> top_k;           // sampling only; >= 0, 0 disables
  std::optional<double> top_p;        // sampling only; in (0, 1]
  // Over generated tokens only. Default: 1 (off) for greedy, see above for the others.
  std::optional<double> repetition_penalty;
  std::optional<int> num_beams;  // beam only; >= 1
  std::optional<uint64_t> seed;  // sampling only. Default: random
};

// Text decoded since the previous delta, with the tokens that produced it. `text` is empty when a
// token ends inside a UTF-8 character; the deltas of a request concatenate to OcrResult::text.
struct TextDelta {
  std::string text;
  std::vector<int32_t> token_ids;
};

struct OcrRequest {
  // Encoded image (PNG, JPEG, WebP, BMP, TIFF). A std::string so that a protobuf `bytes` field
  // can be moved in without a copy.
  std::string image;
  // A registered adapter's name; empty for the base model.
  std::string adapter;
  // The question sent with the image. Default: train::kDefaultCsvPrompt, the question the
  // fine-tuning recipe trains with. Empty: the image alone.
  std::optional<std::string> prompt;
  DecodingOptions decoding;
  // Most slices for this image. Default: the model's preprocessor max_slice_nums.
  std::optional<int> max_slice_nums;
  // Past it, the request is not started (DEADLINE_EXCEEDED); a request that finishes late is
  // DEADLINE_EXCEEDED too.
  std::optional<Clock::time_point> deadline;
  // Optional; cancel() completes a queued request with CANCELLED at once.
  std::shared_ptr<CancellationToken> cancellation;
  // Optional streaming: called on the engine thread with the text as it is produced, before the
  // result is delivered. Must not block (hand the delta to the transport and return).
  std::function<void(const TextDelta&)> on_delta;
};

// Where a request's time went.
struct OcrTimings {
  // Waiting for the engine: from arrival to its batch starting, less the preparation.
  std::chrono::nanoseconds queue{0};
  // Image decoding and slicing, prompt building (off the engine thread), the vision tower, the
  // resampler and the prompt embeddings.
  std::chrono::nanoseconds prefill{0};
  // The LLM's generation for the request's batch, prompt pass included (the batched generation
  // does not report where its prompt pass ends).
  std::chrono::nanoseconds decode{0};
  // Arrival to result.
  std::chrono::nanoseconds total{0};
};

struct OcrResult {
  std::string text;  // post-processed as the reference chat() does (serve/answer_text.h)
  serve::FinishReason finish = serve::FinishReason::kLength;
  int prompt_tokens = 0;     // image placeholders included
  int generated_tokens = 0;  // a stop token that ended decoding included
  int num_image_slices = 0;  // source image included
  int batch_size = 0;        // requests in the batch this one ran in
  std::string adapter;       // empty for the base model
  OcrTimings timings;
};

}  // namespace cpm::core::runtime
