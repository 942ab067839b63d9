// SPDX-License-Identifier: Apache-2.0
#include "model/checkpoint.h"

#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

namespace cpm::core::model {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using Fn = std::function<at::Tensor(const at::Tensor&)>;

// Carries fn from the forward to the backward inside the node's saved data (freed with the node).
struct FnHolder : torch::CustomClassHolder {
  explicit FnHolder(Fn f) : fn(std::move(f)) {}
  Fn fn;
};

// inputs = {x, params...}. The forward runs without recording a graph; the backward reruns fn on
// a detached copy of x and differentiates that.
struct Checkpoint : torch::autograd::Function<Checkpoint> {
  // A TensorList (not a vector) so that autograd sees every element as an input.
  static variable_list forward(AutogradContext* ctx, Fn fn, at::TensorList inputs) {
    ctx->save_for_backward(inputs.vec());
    ctx->saved_data["fn"] = c10::IValue::make_capsule(c10::make_intrusive<FnHolder>(fn));
    at::NoGradGuard no_grad;
    return {fn(inputs[0])};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto holder = c10::static_intrusive_pointer_cast<FnHolder>(ctx->saved_data["fn"].toCapsule());
    const Fn& fn = holder->fn;
    variable_list inputs = ctx->get_saved_variables();
    const at::Tensor x = inputs[0].detach().requires_grad_(inputs[0].requires_grad());
    at::Tensor y;
    {
      at::AutoGradMode grad(true);
      y = fn(x);
    }
    variable_list wrt;
    std::vector<size_t> index;  // position in `inputs` of each tensor differentiated
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (i == 0 ? x.requires_grad() : inputs[i].requires_grad()) {
        wrt.push_back(i == 0 ? x : inputs[i]);
        index.push_back(i);
      }
    }
    // One undefined gradient for `fn`, then one per tensor input.
    variable_list grads(inputs.size() + 1);
    if (wrt.empty()) return grads;
    const variable_list g = torch::autograd::grad({y}, wrt, {grad_outputs[0]}, /*retain_graph=*/false,
                                                  /*create_graph=*/false, /*allow_unused=*/true);
    for (size_t j = 0; j < wrt.size(); ++j) grads[index[j] + 1] = g[j];
    return grads;
  }
};

}  // namespace

at::Tensor checkpointed(const Fn& fn, const at::Tensor& x, const std::vector<at::Tensor>& params) {
  // Built with push_back: GCC 13 -O3 reports a false array-bounds error for insert() here.
  variable_list inputs;
  inputs.reserve(1 + params.size());
  inputs.push_back(x);
  for (const at::Tensor& p : params) inputs.push_back(p);
  return Checkpoint::apply(fn, at::TensorList(inputs))[0];
}

}  // namespace cpm::core::model
