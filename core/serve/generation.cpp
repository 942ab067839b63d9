// SPDX-License-Identifier: Apache-2.0
#include "serve/generation.h"

#include <ATen/ops/arange.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/full.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>

#include <algorithm>

#include "serve/left_padding.h"
#include "serve/static_decode.h"

namespace cpm::core::serve {

namespace {

// The decoding loop; `choose` picks the next token from the last position's logits [vocab].
template <typename Choose>
Generation decode(const model::Qwen2ForCausalLM& llm, const at::Tensor& inputs_embeds,
                  const GreedyOptions& options, Choose choose) {
  Generation out;
  model::KvCache cache;
  const int64_t prompt = inputs_embeds.size(1);
  const auto long_options = inputs_embeds.options().dtype(at::kLong);
  at::Tensor hidden = llm.hidden_states(inputs_embeds, at::arange(prompt, long_options).unsqueeze(0), &cache);
  for (int step = 0; step < options.max_new_tokens; ++step) {
    // Only the last position's logits matter: [1, hidden] -> [1, vocab].
    const at::Tensor logits = llm.logits(hidden.select(1, hidden.size(1) - 1))[0];
    const int32_t token = choose(logits, out.tokens);
    out.tokens.push_back(token);
    if (std::find(options.stop_ids.begin(), options.stop_ids.end(), token) != options.stop_ids.end()) {
      out.finish = FinishReason::kStop;
      if (options.on_token) options.on_token(0, token);
      return out;
    }
    if (options.on_token && !options.on_token(0, token)) return out;
    const at::Tensor next = at::full({1, 1}, token, long_options);
    const at::Tensor position = at::full({1, 1}, prompt + step, long_options);
    hidden = llm.hidden_states(llm.embed(next), position, &cache);
  }
  out.finish = FinishReason::kLength;
  return out;
}

// The batched decoding loop, left-padded as the reference batches prompts (serve/left_padding.h).
// `choose(logits [B, vocab], out, done)` returns each row's next token on the host, given the
// tokens so far and which rows are finished; a finished row's token is fed on (so the batch stays
// rectangular) but dropped.
template <typename Choose>
std::vector<Generation> decode_batch(const model::Qwen2ForCausalLM& llm, const std::vector<at::Tensor>& prompts,
                                     const GreedyOptions& options, Choose choose) {
  std::vector<Generation> out(prompts.size());
  if (prompts.empty()) return out;
  const LeftPadded in = left_pad(llm, prompts);
  const int64_t batch = in.mask.size(0), longest = in.mask.size(1);
  const auto long_options = in.mask.options();
  at::Tensor mask = in.mask;
  model::KvCache cache;
  at::Tensor hidden = llm.hidden_states(in.embeds, in.positions, &cache, mask);
  at::Tensor next_position = in.positions.select(1, longest - 1) + 1;  // [B]
  std::vector<bool> done(prompts.size(), false);
  for (int step = 0; step < options.max_new_tokens; ++step) {
    const std::vector<int64_t> picked = choose(llm.logits(hidden.select(1, hidden.size(1) - 1)), out, done);
    if (!record_tokens(picked.data(), options, out, done)) return out;
    mask = at::cat({mask, at::ones({batch, 1}, long_options)}, 1);
    const at::Tensor tokens = at::tensor(picked, long_options).unsqueeze(1);  // [B, 1]
    hidden = llm.hidden_states(llm.embed(tokens), next_position.unsqueeze(1), &cache, mask);
    next_position = next_position + 1;
  }
  return out;
}

}  // namespace

Generation generate_greedy(const model::Qwen2ForCausalLM& llm, const at::Tensor& inputs_embeds,
                           const GreedyOptions& options) {
  // On CUDA a decode step is one CUDA-graph replay (serve/static_decode.h).
  if (inputs_embeds.is_cuda()) return generate_greedy_batch_static(llm, {inputs_embeds[0]}, options).front();
  return decode(llm, inputs_embeds, options, [](const at::Tensor& logits, const std::vector<int32_t>&) {
    return static_cast<int32_t>(logits.argmax().item<int64_t>());
  });
}

std::vector<Generation> generate_greedy_batch(const model::Qwen2ForCausalLM& llm,
                                              const std::vector<at::Tensor>& prompts,
                                              const GreedyOptions& options) {
  if (!prompts.empty() && prompts.front().is_cuda()) return generate_greedy_batch_static(llm, prompts, options);
  return decode_batch(llm, prompts, options, [](const at::Tensor& logits, const std::vector<Generation>&,
                                                  const std::vector<bool>&) {
    // One device-to-host copy per step, not one synchronising read per row.
    const at::Tensor host = logits.argmax(-1).to(at::kCPU).contiguous();
    return std::vector<int64_t>(host.data_ptr<int64_t>(), host.data_ptr<int64_t>() + host.numel());
  });
}

Generation generate_sampled(const model::Qwen2ForCausalLM& llm, const at::Tensor& inputs_embeds,
                            const GreedyOptions& options, const SamplingOptions& sampling, uint64_t seed) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  return decode(llm, inputs_embeds, options,
                [&](const at::Tensor& logits, const std::vector<int32_t>& generated) {
                  return sample_token(process_scores(logits.cpu(), generated, sampling), generator);
                });
}

std::vector<Generation> generate_sampled_batch(const model::Qwen2ForCausalLM& llm,
                                               const std::vector<at::Tensor>& prompts,
                                               const GreedyOptions& options,
                                               const std::vector<SamplingOptions>& sampling,
                                               const std::vector<uint64_t>& seeds) {
  TORCH_CHECK(seeds.size() == prompts.size(), "sampled batch: ", prompts.size(), " prompts but ", seeds.size(),
              " seeds");
  TORCH_CHECK(sampling.size() == 1 || sampling.size() == prompts.size(), "sampled batch: ", prompts.size(),
              " prompts but ", sampling.size(), " sampling options (give one, or one per prompt)");
  // One generator per row, seeded as generate_sampled seeds its one: a row's draws do not depend on
  // the other rows or on when they finish.
  std::vector<at::Generator> generators;
  for (const uint64_t seed : seeds) generators.push_back(at::make_generator<at::CPUGeneratorImpl>(seed));
  return decode_batch(llm, prompts, options, [&](const at::Tensor& logits, const std::vector<Generation>& out,
                                                 const std::vector<bool>& done) {
    const at::Tensor host = logits.to(at::kCPU);  // [B, vocab], one copy per step
    std::vector<int64_t> picked(prompts.size(), 0);  // finished rows: id 0, dropped
    for (size_t b = 0; b < prompts.size(); ++b) {
      if (done[b]) continue;
      const SamplingOptions& o = sampling.size() == 1 ? sampling.front() : sampling[b];
      picked[b] = sample_token(process_scores(host[static_cast<int64_t>(b)], out[b].tokens, o), generators[b]);
    }
    return picked;
  });
}

}  // namespace cpm::core::serve
