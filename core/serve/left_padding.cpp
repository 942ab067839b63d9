// SPDX-License-Identifier: Apache-2.0
#include "serve/left_padding.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/zeros.h>

#include <algorithm>

namespace cpm::core::serve {

LeftPadded left_pad(const model::Qwen2ForCausalLM& llm, const std::vector<at::Tensor>& prompts) {
  const auto batch = static_cast<int64_t>(prompts.size());
  int64_t longest = 0;
  for (const at::Tensor& p : prompts) longest = std::max(longest, p.size(0));
  const auto long_options = prompts.front().options().dtype(at::kLong);
  const at::Tensor pad = llm.embed(at::zeros({1}, long_options))[0];  // id 0's embedding [hidden]
  std::vector<at::Tensor> rows;
  LeftPadded out;
  out.mask = at::zeros({batch, longest}, long_options);
  for (int64_t b = 0; b < batch; ++b) {
    const at::Tensor& p = prompts[static_cast<size_t>(b)];
    const int64_t n = p.size(0);
    rows.push_back(at::cat({pad.expand({longest - n, pad.size(0)}), p}, 0));
    out.mask[b].narrow(0, longest - n, n).fill_(1);
  }
  out.embeds = at::stack(rows);
  out.positions = (out.mask.cumsum(1) - 1).masked_fill(out.mask.eq(0), 1);
  return out;
}

bool record_tokens(const int64_t* picked, const GreedyOptions& options, std::vector<Generation>& out,
                   std::vector<bool>& done) {
  bool going = false;
  for (size_t b = 0; b < out.size(); ++b) {
    if (done[b]) continue;
    const auto token = static_cast<int32_t>(picked[b]);
    out[b].tokens.push_back(token);
    if (std::find(options.stop_ids.begin(), options.stop_ids.end(), token) != options.stop_ids.end()) {
      out[b].finish = FinishReason::kStop;
      done[b] = true;
    }
    if (options.on_token && !options.on_token(b, token)) done[b] = true;
    going = going || !done[b];
  }
  return going;
}

}  // namespace cpm::core::serve
