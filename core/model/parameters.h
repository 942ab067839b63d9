// SPDX-License-Identifier: Apache-2.0
//
// Model weights by checkpoint name. Every layer is built from a Parameters store and a scope
// ("llm.model.layers.3.self_attn"), and fetches its tensors by the checkpoint's own key
// ("<scope>.q_proj.weight"), so the names in the store are exactly the safetensors keys and loading
// is a strict join. Layers hold tensor handles (shared storage), not copies: updating a tensor in
// place in the store (training, adapter merge) updates every layer that uses it.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace cpm::core::model {

// How a freshly generated (random) checkpoint initialises a parameter.
enum class Init { kNormal, kOnes, kZeros };

// One parameter the architecture expects: its checkpoint key and shape.
struct ParamSpec {
  std::string name;
  std::vector<int64_t> shape;
  Init init = Init::kNormal;
};

// Appends `scope` + "." + suffix specs; a helper for the *_parameter_specs functions.
void add_spec(std::vector<ParamSpec>& specs, const std::string& scope, const std::string& suffix,
              std::vector<int64_t> shape, Init init = Init::kNormal);

// The loaded weights. Not thread-safe for writes; reads are safe once loading is done.
// A tensor may be a view into a buffer it shares with others (see stack_rows): the store still
// holds it under its own key and shape.
class Parameters {
 public:
  void set(const std::string& name, at::Tensor tensor) { tensors_[name] = std::move(tensor); }
  bool contains(const std::string& name) const { return tensors_.count(name) > 0; }
  // The tensor named `name`; throws std::out_of_range naming it when absent (a bug: the loader
  // checks every spec before any layer is built).
  const at::Tensor& get(const std::string& name) const;
  const std::map<std::string, at::Tensor>& all() const { return tensors_; }

 private:
  std::map<std::string, at::Tensor> tensors_;
};

// Projections that read the same input (q/k/v, gate/up) run as one matrix multiply when their
// weights are consecutive rows of one buffer. The store keeps each under its checkpoint key, as a
// view of that buffer, so nothing else sees the difference and no second copy exists.
//
// `parts` stacked along dim 0 (all of one dtype and device, equal trailing sizes): a view of their
// buffer when they already lie in it back to back, in order; otherwise a new tensor (a copy).
at::Tensor stacked_rows(const std::vector<at::Tensor>& parts);

// Lays the tensors named `names` out as consecutive rows of one new buffer and stores each as a
// view of it (nothing to do when they already are); the old tensors are released unless held
// elsewhere. Throws std::out_of_range for a name not in the store.
void stack_rows(Parameters& params, const std::vector<std::string>& names);

}  // namespace cpm::core::model
