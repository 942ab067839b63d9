// SPDX-License-Identifier: Apache-2.0
#include "serve/sampling.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/multinomial.h>
#include <ATen/ops/softmax.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/topk.h>
#include <ATen/ops/where.h>

#include <algorithm>
#include <limits>

namespace cpm::core::serve {

at::Tensor process_scores(const at::Tensor& input, const std::vector<int32_t>& generated,
                          const SamplingOptions& o) {
  at::Tensor scores = input.to(at::kFloat).clone();
  const float neg_inf = -std::numeric_limits<float>::infinity();
  if (o.repetition_penalty != 1.0 && !generated.empty()) {
    const at::Tensor ids = at::tensor(std::vector<int64_t>(generated.begin(), generated.end()),
                                      scores.options().dtype(at::kLong));
    const at::Tensor picked = scores.index_select(0, ids);
    // Duplicates write the same value, as the reference's gather + scatter does.
    scores.index_put_({ids}, at::where(picked < 0, picked * o.repetition_penalty, picked / o.repetition_penalty));
  }
  if (o.temperature != 1.0) scores = scores / o.temperature;
  if (o.top_k > 0) {
    const int64_t k = std::min<int64_t>(o.top_k, scores.size(0));
    const at::Tensor kth = std::get<0>(at::topk(scores, k)).select(0, k - 1);
    scores = scores.masked_fill(scores < kth, neg_inf);
  }
  if (o.top_p < 1.0) {
    // Ascending sort; drop the low tail whose cumulative probability stays within 1 - top_p, but
    // always keep the most likely token.
    const auto [sorted, order] = at::sort(scores, /*dim=*/0, /*descending=*/false);
    at::Tensor remove = sorted.softmax(0).cumsum(0) <= (1 - o.top_p);
    remove.select(0, remove.size(0) - 1).fill_(false);
    scores = scores.masked_fill(remove.scatter(0, order, remove), neg_inf);
  }
  return scores;
}

int32_t sample_token(const at::Tensor& processed, at::Generator& generator) {
  return static_cast<int32_t>(at::multinomial(processed.softmax(0), 1, false, generator).item<int64_t>());
}

}  // namespace cpm::core::serve
