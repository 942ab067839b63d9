// SPDX-License-Identifier: Apache-2.0
//
// The LLMs that run one forward pass over rows of different adapters (model::Qwen2ForCausalLM::
// mixed), kept across engine cycles: a decode step's CUDA graph is cached per model identity
// (serve/static_decode.h), so a layout that comes back (the same adapters with the same row
// counts) must be the same model to replay its graph instead of capturing a new one.
#pragma once

#include <cstddef>
#include <list>
#include <memory>
#include <vector>

#include "model/qwen2.h"

namespace cpm::core::runtime {

// Engine thread only.
class MixedAdapterModels {
 public:
  // `base`: the base LLM every adapter model is built over; it outlives this. Default: 8 layouts.
  explicit MixedAdapterModels(const model::Qwen2ForCausalLM& base, size_t max_layouts = 8);

  // Whether `adapted` can share a pass with others (base.can_mix).
  bool can_mix(const model::Qwen2ForCausalLM& adapted) const { return base_.can_mix(adapted); }

  // The LLM for a call whose row i runs on `row_models[i]` (each the base or a mixable adapter
  // model): that model itself when all rows share one, else the mixed model of the layout (runs
  // of equal consecutive models), built once and reused while its models live. Valid until the
  // next call on this object.
  const model::Qwen2ForCausalLM& get(const std::vector<const model::Qwen2ForCausalLM*>& row_models);

  // Drops the layouts that name a model that is gone (an unloaded adapter), so that their
  // references to its tensors do not keep its device memory.
  void prune();
  size_t layouts() const { return layouts_.size(); }

 private:
  struct Layout {
    std::vector<std::weak_ptr<const int>> models;
    std::vector<int64_t> rows;
    std::unique_ptr<model::Qwen2ForCausalLM> mixed;
  };
  const model::Qwen2ForCausalLM& base_;
  const size_t max_layouts_;
  std::list<Layout> layouts_;  // most recently used first
};

}  // namespace cpm::core::runtime
