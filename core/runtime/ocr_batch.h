// SPDX-License-Identifier: Apache-2.0
//
// The tensor half of OCR: a group of prepared requests with one decoding kind, run on the model's
// device. Each row's image goes through its own model's (the base's or its adapter's) vision tower
// and resampler alone (as it would alone), then the rows' prompts are decoded together:
// generate_greedy_batch or generate_sampled_batch with left padding, or generate_beam one row at a
// time. Rows of different adapters share one pass (runtime/mixed_adapters.h), unless an adapter
// cannot be mixed (its decoder weights differ from the base's, or it keeps PEFT's float32 LoRA):
// then its rows decode in a call of their own. Every row's result equals the row run alone.
#pragma once

#include <c10/core/Device.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "model/minicpmo.h"
#include "runtime/decoding.h"
#include "runtime/mixed_adapters.h"
#include "runtime/ocr_input.h"
#include "serve/generation.h"

namespace cpm::core::runtime {

struct BatchRow {
  const model::MiniCPMO* model = nullptr;  // the base or the row's adapter
  const OcrInput* input = nullptr;
  const ResolvedDecoding* decoding = nullptr;  // all rows of a group have the same kind
  // Each new token as it is produced (greedy and sampled decoding; beam search hands over its
  // best sequence at the end); false ends the row (cancelled).
  std::function<bool(int32_t token)> on_token;
};

struct RowOutcome {
  absl::Status status;  // OK, or why this row failed
  serve::Generation generation;
  std::chrono::nanoseconds prefill{0};  // vision tower, resampler, prompt embeddings
  std::chrono::nanoseconds decode{0};   // the generation this row was part of
  int batch_size = 0;                   // rows in that generation
};

// INTERNAL errors that say the allocator ran out ("out of memory", "can't allocate memory": older
// LibTorch and the CPU allocator throw a plain c10::Error) become RESOURCE_EXHAUSTED.
absl::Status classify_device_error(absl::Status status);

// Runs `rows` on their models (tensors on `device`; adapters of `mixer`'s base). Rows are best
// given sorted by model: each run of one model is one LoRA segment. A row whose prefill fails fails
// alone. A
// generation over several rows that fails with RESOURCE_EXHAUSTED (device out of memory) is
// retried one row at a time, so only a row that does not fit by itself fails. Rows that allow fewer
// new tokens than the group's largest max_new_tokens are cut to theirs: decoding is causal, so the
// cut result is the one they would have had alone. `before_generation`, when set, runs before each
// generation call with its number of rows (a fault-injection seam for tests; what it throws is
// handled as the generation's own error). Call on the engine thread only.
std::vector<RowOutcome> run_ocr_batch(MixedAdapterModels& mixer, c10::Device device,
                                      const std::vector<BatchRow>& rows,
                                      const std::vector<int32_t>& stop_ids,
                                      const std::function<void(int)>& before_generation);

}  // namespace cpm::core::runtime
