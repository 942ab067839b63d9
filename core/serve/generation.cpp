// SPDX-License-Identifier: Apache-2.0
#include "serve/generation.h"

#include <ATen/ops/arange.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/ops/full.h>

#include <algorithm>

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
      return out;
    }
    const at::Tensor next = at::full({1, 1}, token, long_options);
    const at::Tensor position = at::full({1, 1}, prompt + step, long_options);
    hidden = llm.hidden_states(llm.embed(next), position, &cache);
  }
  out.finish = FinishReason::kLength;
  return out;
}

}  // namespace

Generation generate_greedy(const model::Qwen2ForCausalLM& llm, const at::Tensor& inputs_embeds,
                           const GreedyOptions& options) {
  return decode(llm, inputs_embeds, options, [](const at::Tensor& logits, const std::vector<int32_t>&) {
    return static_cast<int32_t>(logits.argmax().item<int64_t>());
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

}  // namespace cpm::core::serve
