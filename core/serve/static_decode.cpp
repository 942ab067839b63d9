// SPDX-License-Identifier: Apache-2.0
#include "serve/static_decode.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <functional>

#include "serve/left_padding.h"

#ifdef CPM_WITH_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace cpm::core::serve {
namespace {

// Runs `step` for every decode step after the first: eagerly once, then (CUDA) captured on a side
// stream and replayed. `after` reads each step's result; it returns false to stop.
void run_steps(const std::function<void()>& step, const std::function<bool()>& after, int steps, bool graph) {
  if (steps <= 0) return;
#ifdef CPM_WITH_CUDA
  if (graph) {
    // Capture needs a side stream; the eager first step there also warms up cuBLAS for it.
    const c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool();
    const c10::cuda::CUDAStream current = c10::cuda::getCurrentCUDAStream();
    at::cuda::CUDAEvent ready;
    ready.record(current);
    ready.block(side);
    at::cuda::CUDAGraph cuda_graph;
    bool more = true;
    {
      const c10::cuda::CUDAStreamGuard guard(side);
      step();
      more = after();
      if (more && steps > 1) {
        cuda_graph.capture_begin();
        step();
        cuda_graph.capture_end();
      }
    }
    at::cuda::CUDAEvent done;
    done.record(side);
    done.block(current);
    for (int i = 1; more && i < steps; ++i) {
      cuda_graph.replay();
      more = after();
    }
    return;
  }
#endif
  (void)graph;
  for (int i = 0; i < steps; ++i) {
    step();
    if (!after()) return;
  }
}

}  // namespace

std::vector<Generation> generate_greedy_batch_static(const model::Qwen2ForCausalLM& llm,
                                                     const std::vector<at::Tensor>& prompts,
                                                     const GreedyOptions& options, bool cuda_graph) {
  std::vector<Generation> out(prompts.size());
  if (prompts.empty() || options.max_new_tokens <= 0) return out;
  const LeftPadded in = left_pad(llm, prompts);
  const int64_t batch = in.mask.size(0), longest = in.mask.size(1);
  const int64_t capacity = longest + options.max_new_tokens;
  const auto long_options = in.mask.options();

  model::KvCache prefill;
  const at::Tensor hidden = llm.hidden_states(in.embeds, in.positions, &prefill, in.mask);
  at::Tensor next = llm.logits(hidden.select(1, longest - 1)).argmax(-1);  // [B]

  std::vector<bool> done(prompts.size(), false);
  // Records the step's tokens (one device-to-host copy); false once every row has stopped.
  const auto take = [&](const at::Tensor& tokens) {
    const at::Tensor host = tokens.to(at::kCPU).contiguous();
    return record_tokens(host.data_ptr<int64_t>(), options, out, done);
  };
  if (!take(next) || options.max_new_tokens == 1) return out;

  // The static cache: the prompt's keys and values, then room for every new token.
  model::KvCache cache;
  for (size_t i = 0; i < prefill.keys.size(); ++i) {
    for (auto [from, to] : {std::pair{&prefill.keys, &cache.keys}, std::pair{&prefill.values, &cache.values}}) {
      const at::Tensor& k = (*from)[i];  // [B, Hkv, longest, Dh]
      at::Tensor buffer = at::zeros({k.size(0), k.size(1), capacity, k.size(3)}, k.options());
      buffer.narrow(2, 0, longest).copy_(k);
      to->push_back(buffer);
    }
  }
  prefill = {};
  cache.write_positions = at::full({1}, longest, long_options);
  at::Tensor key_mask = at::zeros({batch, capacity}, long_options);
  key_mask.narrow(1, 0, longest).copy_(in.mask);
  const at::Tensor ids = next.unsqueeze(1).clone();                                      // [B, 1]
  const at::Tensor position = (in.positions.select(1, longest - 1) + 1).unsqueeze(1);   // [B, 1]
  // One decode step on fixed buffers, advancing them for the next: the slot being written becomes
  // visible, the token's keys and values go into it, and its argmax is the next input.
  const auto step = [&] {
    key_mask.index_fill_(1, cache.write_positions, 1);
    const at::Tensor h = llm.hidden_states(llm.embed(ids), position, &cache, key_mask);
    next = llm.logits(h.select(1, 0)).argmax(-1);
    ids.copy_(next.unsqueeze(1));
    position.add_(1);
    cache.write_positions.add_(1);
  };
  run_steps(step, [&] { return take(next); }, options.max_new_tokens - 1, cuda_graph);
  return out;
}

}  // namespace cpm::core::serve
