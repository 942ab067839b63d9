// SPDX-License-Identifier: Apache-2.0
#include "runtime/ocr_batch.h"

#include <ATen/core/grad_mode.h>
#include <ATen/ops/tensor.h>

#include <algorithm>
#include <cctype>
#include <string>

#include "common/guard.h"
#include "serve/beam_search.h"

namespace cpm::core::runtime {
namespace {

using Clock = std::chrono::steady_clock;

// One generation call over `indices` (rows of one kind), filling their outcomes.
absl::Status generate(MixedAdapterModels& mixer, const std::vector<BatchRow>& rows,
                      const std::vector<at::Tensor>& prompts, const std::vector<size_t>& indices,
                      const std::vector<int32_t>& stop_ids, const std::function<void(int)>& before,
                      std::vector<int>& delivered, std::vector<RowOutcome>& out) {
  const auto start = Clock::now();
  serve::GreedyOptions limits;
  std::vector<int> produced(indices.size(), 0);
  limits.stop_ids = stop_ids;
  limits.max_new_tokens = 0;  // the largest of the rows'
  for (const size_t i : indices) {
    limits.max_new_tokens = std::max(limits.max_new_tokens, rows[i].decoding->max_new_tokens);
  }
  // Rows asking for fewer tokens than the call's limit end at their own; streaming rows see each
  // token as it comes, once: a row retried alone after running out of memory replays the same
  // tokens, and those already delivered are not passed on again.
  limits.on_token = [&](size_t row, int32_t token) {
    const size_t i = indices[row];
    const BatchRow& r = rows[i];
    bool more = true;
    if (++produced[row] > delivered[i]) {
      ++delivered[i];
      more = !r.on_token || r.on_token(token);
    }
    return more && produced[row] < r.decoding->max_new_tokens;
  };
  std::vector<at::Tensor> batch;
  for (const size_t i : indices) batch.push_back(prompts[i]);
  std::vector<const model::Qwen2ForCausalLM*> row_models;
  for (const size_t i : indices) row_models.push_back(&rows[i].model->llm());
  std::vector<serve::Generation> generations;
  const absl::Status status = classify_device_error(guarded("generation", [&] {
    if (before) before(static_cast<int>(indices.size()));
    const model::Qwen2ForCausalLM& llm = mixer.get(row_models);
    const ResolvedDecoding& first = *rows[indices.front()].decoding;
    switch (first.kind) {
      case DecodeKind::kGreedy:
        generations = serve::generate_greedy_batch(llm, batch, limits);
        break;
      case DecodeKind::kSampled: {
        std::vector<serve::SamplingOptions> sampling;
        std::vector<uint64_t> seeds;
        for (const size_t i : indices) {
          sampling.push_back(rows[i].decoding->sampling);
          seeds.push_back(rows[i].decoding->seed);
        }
        generations = serve::generate_sampled_batch(llm, batch, limits, sampling, seeds);
        break;
      }
      case DecodeKind::kBeam: {  // REQUIRES: one row (the caller splits beam groups)
        generations = {
            serve::generate_beam(llm, batch.front().unsqueeze(0), limits, first.beam).best};
        for (const int32_t token : generations.front().tokens) {
          if (!limits.on_token(0, token)) break;
        }
        break;
      }
    }
    return absl::OkStatus();
  }));
  if (!status.ok()) return status;
  const auto elapsed = Clock::now() - start;
  for (size_t k = 0; k < indices.size(); ++k) {
    RowOutcome& o = out[indices[k]];
    o.generation = std::move(generations[k]);
    o.decode = elapsed;
    o.batch_size = static_cast<int>(indices.size());
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status classify_device_error(absl::Status status) {
  if (status.code() != absl::StatusCode::kInternal) return status;
  std::string lower(status.message());
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  if (lower.find("out of memory") != std::string::npos ||
      lower.find("can't allocate memory") != std::string::npos) {
    return absl::ResourceExhaustedError(status.message());
  }
  return status;
}

std::vector<RowOutcome> run_ocr_batch(MixedAdapterModels& mixer, c10::Device device,
                                      const std::vector<BatchRow>& rows,
                                      const std::vector<int32_t>& stop_ids,
                                      const std::function<void(int)>& before_generation) {
  // Inference only; the engine thread also runs training steps, so the mode is scoped here.
  at::NoGradGuard no_grad;
  std::vector<RowOutcome> out(rows.size());
  std::vector<at::Tensor> prompts(rows.size());  // each [T_i, hidden]
  std::vector<size_t> live;
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto start = Clock::now();
    const OcrInput& in = *rows[i].input;
    const model::MiniCPMO& model = *rows[i].model;
    out[i].status = classify_device_error(guarded("prefill", [&] {
      const at::Tensor features = model.encode_images(in.image.pixel_values, in.image.tgt_sizes);
      const std::vector<int64_t> ids(in.prompt.input_ids.begin(), in.prompt.input_ids.end());
      prompts[i] =
          model.prompt_embeddings(at::tensor(ids).to(device), in.prompt.image_bound, features)[0];
      return absl::OkStatus();
    }));
    out[i].prefill = Clock::now() - start;
    if (out[i].status.ok()) live.push_back(i);
  }
  if (live.empty()) return out;

  // Beam search decodes one row at a time. The others decode together: the rows of mixable models
  // in one call, those of a model that cannot be mixed in a call of their own (one model alone
  // needs no mixing). After running out of memory together, a call's rows go one by one.
  std::vector<std::vector<size_t>> calls;
  const bool one_model =
      std::all_of(live.begin(), live.end(), [&](size_t i) { return rows[i].model == rows[live.front()].model; });
  if (rows[live.front()].decoding->kind == DecodeKind::kBeam) {
    for (const size_t i : live) calls.push_back({i});
  } else if (one_model) {
    calls.push_back(live);
  } else {
    std::vector<size_t> mixed;
    std::vector<const model::MiniCPMO*> alone_models;  // models that cannot be mixed, one call each
    std::vector<std::vector<size_t>> alone_calls;
    for (const size_t i : live) {
      if (mixer.can_mix(rows[i].model->llm())) {
        mixed.push_back(i);
        continue;
      }
      const auto at = std::find(alone_models.begin(), alone_models.end(), rows[i].model);
      if (at == alone_models.end()) {
        alone_models.push_back(rows[i].model);
        alone_calls.push_back({i});
      } else {
        alone_calls[static_cast<size_t>(at - alone_models.begin())].push_back(i);
      }
    }
    if (!mixed.empty()) calls.push_back(std::move(mixed));
    for (auto& call : alone_calls) calls.push_back(std::move(call));
  }
  std::vector<int> delivered(rows.size(), 0);  // tokens handed to each row's on_token
  for (const std::vector<size_t>& call : calls) {
    absl::Status status = generate(mixer, rows, prompts, call, stop_ids, before_generation, delivered, out);
    if (status.code() == absl::StatusCode::kResourceExhausted && call.size() > 1) {
      for (const size_t i : call) {
        const absl::Status alone =
            generate(mixer, rows, prompts, {i}, stop_ids, before_generation, delivered, out);
        if (!alone.ok()) out[i].status = alone;
      }
    } else if (!status.ok()) {
      for (const size_t i : call) out[i].status = status;
    }
  }
  return out;
}

}  // namespace cpm::core::runtime
