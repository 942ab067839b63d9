// SPDX-License-Identifier: Apache-2.0
#include "serve/static_decode.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>

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

// What one decode step reads and writes, for `batch` rows and `length` cache slots.
struct DecodeGraphCache::Buffers {
  int64_t batch = 0, length = 0;
  model::KvCache cache;  // keys/values [batch, Hkv, length, Dh] per layer; write_positions [1]
  at::Tensor key_mask;   // int64 [batch, length]: 1 = a slot attention sees
  at::Tensor ids;        // int64 [batch, 1]: the step's input tokens
  at::Tensor positions;  // int64 [batch, 1]: their positions

  // Whether these buffers fit a model whose prefill cache is `prefill`.
  bool fits(int64_t b, int64_t l, const model::KvCache& prefill) const {
    const at::Tensor& k = prefill.keys.front();
    const at::Tensor& mine = cache.keys.front();
    return batch == b && length == l && cache.keys.size() == prefill.keys.size() && mine.size(1) == k.size(1) &&
           mine.size(3) == k.size(3) && mine.scalar_type() == k.scalar_type() && mine.device() == k.device();
  }
};

struct DecodeGraphCache::Entry {
  std::weak_ptr<const int> model;
  int64_t batch = 0, length = 0;
  std::shared_ptr<Buffers> buffers;
#ifdef CPM_WITH_CUDA
  std::unique_ptr<at::cuda::CUDAGraph> graph;  // the captured step, once captured
#endif
  at::Tensor next;  // int64 [batch]: the captured step's output (its argmax)

  bool captured() const {
#ifdef CPM_WITH_CUDA
    return graph != nullptr;
#else
    return false;
#endif
  }
};

namespace {

bool same_model(const std::weak_ptr<const int>& a, const std::shared_ptr<const int>& b) {
  return !a.owner_before(b) && !b.owner_before(a);
}

}  // namespace

DecodeGraphCache::DecodeGraphCache(size_t max_entries) : max_entries_(std::max<size_t>(max_entries, 1)) {}

DecodeGraphCache::~DecodeGraphCache() = default;

size_t DecodeGraphCache::entries() const {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_.size();
}

size_t DecodeGraphCache::graphs() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<size_t>(std::count_if(entries_.begin(), entries_.end(), [](const Entry& e) { return e.captured(); }));
}

void DecodeGraphCache::clear() {
  std::lock_guard<std::mutex> lock(mu_);
  entries_.clear();
  buffers_.clear();
}

int64_t DecodeGraphCache::batch_bucket(int64_t rows) {
  if (rows > 16) return (rows + 15) / 16 * 16;
  int64_t bucket = 1;
  while (bucket < rows) bucket *= 2;
  return bucket;
}

int64_t DecodeGraphCache::length_bucket(int64_t slots) { return std::max<int64_t>((slots + 255) / 256, 1) * 256; }

void DecodeGraphCache::drop(std::list<Entry>::iterator it) {
  entries_.erase(it);
  buffers_.erase(std::remove_if(buffers_.begin(), buffers_.end(), [](const auto& b) { return b.expired(); }),
                 buffers_.end());
}

DecodeGraphCache::Entry& DecodeGraphCache::acquire(const model::Qwen2ForCausalLM& llm, int64_t batch, int64_t length,
                                                   const model::KvCache& prefill) {
  for (auto it = entries_.begin(); it != entries_.end();) {
    auto here = it++;
    if (here->model.expired()) drop(here);
  }
  const auto found = std::find_if(entries_.begin(), entries_.end(), [&](const Entry& e) {
    return same_model(e.model, llm.identity()) && e.batch == batch && e.length == length;
  });
  if (found != entries_.end()) {
    entries_.splice(entries_.begin(), entries_, found);
    return entries_.front();
  }
  while (entries_.size() >= max_entries_) drop(std::prev(entries_.end()));
  std::shared_ptr<Buffers> buffers;
  for (const auto& weak : buffers_) {
    if (auto b = weak.lock(); b && b->fits(batch, length, prefill)) buffers = b;
  }
  if (!buffers) {
    buffers = std::make_shared<Buffers>();
    buffers->batch = batch;
    buffers->length = length;
    // Zeros: the slots never written hold finite values, so masking them out is exact.
    for (size_t i = 0; i < prefill.keys.size(); ++i) {
      const at::Tensor& k = prefill.keys[i];  // [B, Hkv, T, Dh]
      buffers->cache.keys.push_back(at::zeros({batch, k.size(1), length, k.size(3)}, k.options()));
      buffers->cache.values.push_back(at::zeros({batch, k.size(1), length, k.size(3)}, k.options()));
    }
    const auto long_options = prefill.keys.front().options().dtype(at::kLong);
    buffers->cache.write_positions = at::zeros({1}, long_options);
    buffers->key_mask = at::zeros({batch, length}, long_options);
    buffers->ids = at::zeros({batch, 1}, long_options);
    buffers->positions = at::zeros({batch, 1}, long_options);
    buffers_.push_back(buffers);
  }
  Entry entry;
  entry.model = llm.identity();
  entry.batch = batch;
  entry.length = length;
  entry.buffers = std::move(buffers);
  entries_.push_front(std::move(entry));
  return entries_.front();
}

namespace {

// Runs `step` `steps` times, handing each result to `after`, which returns false to stop. With
// `graph` (CUDA), the entry's captured graph replays the step; an entry without one runs the first
// step eagerly on a side stream (which also warms cuBLAS up there) and captures the second.
template <typename Entry>
void run_steps(Entry& entry, const std::function<at::Tensor()>& step, const std::function<bool(const at::Tensor&)>& after,
               int steps, bool graph) {
#ifdef CPM_WITH_CUDA
  if (graph) {
    int done = 0;
    if (!entry.graph) {
      const c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool();
      const c10::cuda::CUDAStream current = c10::cuda::getCurrentCUDAStream();
      at::cuda::CUDAEvent ready;
      ready.record(current);
      ready.block(side);
      bool more = true;
      {
        const c10::cuda::CUDAStreamGuard guard(side);
        more = after(step());
        ++done;
        if (more && steps > 1) {
          auto captured = std::make_unique<at::cuda::CUDAGraph>();
          captured->capture_begin();
          try {
            entry.next = step();
            captured->capture_end();
          } catch (...) {
            // End the capture so the stream is usable again; the graph is discarded.
            try {
              captured->capture_end();
            } catch (...) {
            }
            throw;
          }
          entry.graph = std::move(captured);
        }
      }
      at::cuda::CUDAEvent finished;
      finished.record(side);
      finished.block(current);
      if (!more) return;
    }
    for (; done < steps; ++done) {
      entry.graph->replay();
      if (!after(entry.next)) return;
    }
    return;
  }
#endif
  (void)entry;
  (void)graph;
  for (int i = 0; i < steps; ++i) {
    if (!after(step())) return;
  }
}

}  // namespace

std::vector<Generation> generate_greedy_batch_static(const model::Qwen2ForCausalLM& llm,
                                                     const std::vector<at::Tensor>& prompts,
                                                     const GreedyOptions& options, DecodeGraphCache& graphs,
                                                     bool cuda_graph) {
  std::vector<Generation> out(prompts.size());
  if (prompts.empty() || options.max_new_tokens <= 0) return out;
  const LeftPadded in = left_pad(llm, prompts);
  const int64_t batch = in.mask.size(0), longest = in.mask.size(1);

  model::KvCache prefill;
  const at::Tensor hidden = llm.hidden_states(in.embeds, in.positions, &prefill, in.mask);
  const at::Tensor first = llm.logits(hidden.select(1, longest - 1)).argmax(-1);  // [B]

  std::vector<bool> done(prompts.size(), false);
  // Records a step's tokens for the real rows (one device-to-host copy); false once every row
  // has stopped.
  const auto take = [&](const at::Tensor& tokens) {
    const at::Tensor host = tokens.narrow(0, 0, batch).to(at::kCPU).contiguous();
    return record_tokens(host.data_ptr<int64_t>(), options, out, done);
  };
  if (!take(first) || options.max_new_tokens == 1) return out;

  std::lock_guard<std::mutex> lock(graphs.mu_);
  try {
    // The slots the decode steps write: longest .. longest + max_new_tokens - 2.
    DecodeGraphCache::Entry& entry = graphs.acquire(llm, DecodeGraphCache::batch_bucket(batch),
                                                    DecodeGraphCache::length_bucket(longest + options.max_new_tokens - 1),
                                                    prefill);
    DecodeGraphCache::Buffers& b = *entry.buffers;
    // This request's state: the prompt's keys and values in the first rows' first slots, the key
    // mask showing them; the padding rows (results dropped) see nothing and stay finite.
    for (size_t i = 0; i < prefill.keys.size(); ++i) {
      b.cache.keys[i].narrow(0, 0, batch).narrow(2, 0, longest).copy_(prefill.keys[i]);
      b.cache.values[i].narrow(0, 0, batch).narrow(2, 0, longest).copy_(prefill.values[i]);
    }
    prefill = {};
    b.key_mask.zero_();
    b.key_mask.narrow(0, 0, batch).narrow(1, 0, longest).copy_(in.mask);
    b.ids.zero_();
    b.ids.narrow(0, 0, batch).copy_(first.unsqueeze(1));
    b.positions.zero_();
    b.positions.narrow(0, 0, batch).copy_((in.positions.select(1, longest - 1) + 1).unsqueeze(1));
    b.cache.write_positions.fill_(longest);
    // One decode step on the fixed buffers, advancing them for the next: the slot being written
    // becomes visible, the token's keys and values go into it, and its argmax is the next input.
    const auto step = [&llm, &b] {
      b.key_mask.index_fill_(1, b.cache.write_positions, 1);
      const at::Tensor h = llm.hidden_states(llm.embed(b.ids), b.positions, &b.cache, b.key_mask);
      at::Tensor next = llm.logits(h.select(1, 0)).argmax(-1);  // [batch bucket]
      b.ids.copy_(next.unsqueeze(1));
      b.positions.add_(1);
      b.cache.write_positions.add_(1);
      return next;
    };
    run_steps(entry, step, take, options.max_new_tokens - 1, cuda_graph && first.is_cuda());
  } catch (const c10::Error&) {
    // Out of memory or a failed capture: give the cached memory back before the caller retries.
    graphs.entries_.clear();
    graphs.buffers_.clear();
    throw;
  }
  return out;
}

DecodeGraphCache& shared_decode_graphs() {
  static DecodeGraphCache* cache = new DecodeGraphCache();
  return *cache;
}

std::vector<Generation> generate_greedy_batch_static(const model::Qwen2ForCausalLM& llm,
                                                     const std::vector<at::Tensor>& prompts,
                                                     const GreedyOptions& options, bool cuda_graph) {
  return generate_greedy_batch_static(llm, prompts, options, shared_decode_graphs(), cuda_graph);
}

}  // namespace cpm::core::serve
