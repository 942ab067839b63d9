// SPDX-License-Identifier: Apache-2.0
//
// Greedy decoding with a preallocated ("static") KV cache, so that every decode step has the same
// shapes and buffer addresses. On CUDA the step is captured as a CUDA graph and then replayed: the
// ~500 kernels of a step go to the GPU in one launch instead of one host call each, which is what
// bounds a batch-1 decode step otherwise. The results equal generate_greedy_batch's (same left
// padding, masks and positions) up to rounding: attention spans the cache's whole capacity, with
// the slots not written yet masked out.
//
// Captured graphs are kept across requests in a DecodeGraphCache, keyed by the model (the base or
// one adapter: model::Qwen2ForCausalLM::identity), the batch bucket (the batch is padded up to it
// with rows whose results are dropped) and the cache-length bucket (prompt + new tokens rounded
// up), so a request only replays; the first request of a key pays one eager step and the capture.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <vector>

#include "model/qwen2.h"
#include "serve/generation.h"

namespace cpm::core::serve {

// The static decoders kept across requests: per key (model, batch bucket, length bucket) a captured
// CUDA graph of the step and its output (on the CPU, or with graphs off, no graph: the buffers
// only). The buffers a step reads and writes (the KV cache, token ids, positions, key mask) belong
// to a (batch bucket, length bucket) and are shared by the keys of every model with those shapes,
// since decodes run one at a time.
//
// Memory stays bounded: at most `max_entries` keys, the least recently used dropped first; a
// buffer set is freed with the last key that uses it; a key whose model is gone (an unloaded
// adapter) is dropped at the next decode. A graph holds its own memory pool (the step's
// activations and logits) and the buffers their KV cache: 2 * layers * batch * Hkv * length * Dh
// elements, 470 MiB for the real model at batch 32 and length 256 in bf16.
//
// Thread-safe: decodes through one cache run one at a time (each holds the cache for its whole
// generation).
class DecodeGraphCache {
 public:
  // Default: 8 keys.
  explicit DecodeGraphCache(size_t max_entries = 8);
  ~DecodeGraphCache();
  DecodeGraphCache(const DecodeGraphCache&) = delete;
  DecodeGraphCache& operator=(const DecodeGraphCache&) = delete;

  // Keys held, and how many of them have a captured graph.
  size_t entries() const;
  size_t graphs() const;
  // Drops every key and buffer (their device memory goes back to the allocator).
  void clear();

  // Rows are padded up to 1, 2, 4, 8, 16, then multiples of 16.
  static int64_t batch_bucket(int64_t rows);
  // Cache slots (prompt + new tokens) are rounded up to a multiple of 256.
  static int64_t length_bucket(int64_t slots);

 private:
  struct Buffers;
  struct Entry;
  friend std::vector<Generation> generate_greedy_batch_static(const model::Qwen2ForCausalLM&,
                                                              const std::vector<at::Tensor>&, const GreedyOptions&,
                                                              DecodeGraphCache&, bool);
  // The entry for the key, created (with buffers shaped like `prefill`'s layers) when missing;
  // drops expired and least recently used entries. REQUIRES: mu_ held.
  Entry& acquire(const model::Qwen2ForCausalLM& llm, int64_t batch, int64_t length, const model::KvCache& prefill);
  void drop(std::list<Entry>::iterator it);

  const size_t max_entries_;
  mutable std::mutex mu_;
  std::list<Entry> entries_;                     // most recently used first
  std::vector<std::weak_ptr<Buffers>> buffers_;  // the live buffer sets, for sharing
};

// The process's cache, which generate_greedy_batch uses on CUDA (never destroyed: graphs must not
// outlive the CUDA context at exit).
DecodeGraphCache& shared_decode_graphs();

// prompts: each [T_i, hidden], left-padded together. `cuda_graph` captures and replays graphs when
// the model is on a CUDA device (ignored on the CPU).
std::vector<Generation> generate_greedy_batch_static(const model::Qwen2ForCausalLM& llm,
                                                     const std::vector<at::Tensor>& prompts,
                                                     const GreedyOptions& options, DecodeGraphCache& graphs,
                                                     bool cuda_graph = true);
// The same through shared_decode_graphs().
std::vector<Generation> generate_greedy_batch_static(const model::Qwen2ForCausalLM& llm,
                                                     const std::vector<at::Tensor>& prompts,
                                                     const GreedyOptions& options, bool cuda_graph = true);

}  // namespace cpm::core::serve
