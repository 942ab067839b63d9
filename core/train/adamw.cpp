// SPDX-License-Identifier: Apache-2.0
#include "train/adamw.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/scalar_tensor.h>
#include <ATen/ops/zeros_like.h>
#include <c10/core/GradMode.h>

#include <cmath>
#include <map>
#include <regex>
#include <stdexcept>

#include "common/torch_compat.h"

#if CPM_TORCH_VERSION_AT_LEAST(2, 1)
#include <ATen/ops/_foreach_add.h>
#include <ATen/ops/_fused_adamw.h>
#endif

namespace cpm::core::train {

bool decays(const std::string& name) {
  static const std::regex layer_norm(R"((vpm\..*(layer_norm\d|post_layernorm)|resampler\.ln_(q|kv|post))\.weight)");
  if (name.find("bias") != std::string::npos) return false;  // HF: `"bias" not in name`
  return !std::regex_match(name, layer_norm);
}

AdamW::AdamW(std::vector<TrainableParam> params, const AdamWOptions& options)
    : params_(std::move(params)), options_(options) {
  for (const TrainableParam& p : params_) {
    exp_avg_.push_back(at::zeros_like(p.tensor));
    exp_avg_sq_.push_back(at::zeros_like(p.tensor));
  }
#if CPM_TORCH_VERSION_AT_LEAST(2, 1)
  fused_ = !params_.empty() && params_.front().tensor.is_cuda();
#endif
  if (fused_) {
    for (const TrainableParam& p : params_) step_counts_.push_back(at::zeros({}, p.tensor.options().dtype(at::kFloat)));
  }
}

void AdamW::step(double lr) {
  at::NoGradGuard no_grad;
  ++steps_;
  if (fused_) {
    step_fused(lr, nullptr);
  } else {
    step_plain(lr);
  }
}

void AdamW::step_plain(double lr) {
  const double bc1 = 1 - std::pow(options_.beta1, static_cast<double>(steps_));
  const double bc2 = 1 - std::pow(options_.beta2, static_cast<double>(steps_));
  for (size_t i = 0; i < params_.size(); ++i) {
    at::Tensor& p = params_[i].tensor;
    const at::Tensor& g = p.grad();
    if (!g.defined()) continue;
    if (params_[i].decay) p.mul_(1 - lr * options_.weight_decay);
    exp_avg_[i].lerp_(g, 1 - options_.beta1);
    exp_avg_sq_[i].mul_(options_.beta2).addcmul_(g, g, 1 - options_.beta2);
    const at::Tensor denom = (exp_avg_sq_[i].sqrt() / std::sqrt(bc2)).add_(options_.eps);
    p.addcdiv_(exp_avg_[i], denom, -lr / bc1);
  }
}

bool AdamW::device_lr() const { return fused_ && CPM_TORCH_VERSION_AT_LEAST(2, 4); }

void AdamW::step_on_device(const at::Tensor& lr) {
  if (!device_lr()) throw std::logic_error("AdamW::step_on_device needs the fused CUDA kernel of LibTorch >= 2.4");
  at::NoGradGuard no_grad;
  step_fused(0, &lr);
}

void AdamW::step_fused(double lr, const at::Tensor* lr_tensor) {
#if CPM_TORCH_VERSION_AT_LEAST(2, 1)
  // The fused kernel takes one dtype and one weight decay per call: group as torch does.
  std::map<std::pair<int, bool>, std::vector<size_t>> groups;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!params_[i].tensor.grad().defined()) continue;
    groups[{static_cast<int>(params_[i].tensor.scalar_type()), params_[i].decay}].push_back(i);
  }
  for (const auto& [key, members] : groups) {
    std::vector<at::Tensor> p, g, m, v, steps;
    for (size_t i : members) {
      p.push_back(params_[i].tensor);
      g.push_back(params_[i].tensor.grad());
      m.push_back(exp_avg_[i]);
      v.push_back(exp_avg_sq_[i]);
      steps.push_back(step_counts_[i]);
    }
    // The kernel reads the step counts as they are (torch.optim increments them first): a count
    // of 0 would make the bias correction 1 - beta1^0 = 0 and every update NaN.
    at::_foreach_add_(steps, 1);
    const double decay = key.second ? options_.weight_decay : 0.0;
#if CPM_TORCH_VERSION_AT_LEAST(2, 4)
    if (lr_tensor != nullptr) {
      at::_fused_adamw_(p, g, m, v, {}, steps, *lr_tensor, options_.beta1, options_.beta2, decay, options_.eps,
                        /*amsgrad=*/false, /*maximize=*/false);
      continue;
    }
#endif
    at::_fused_adamw_(p, g, m, v, {}, steps, lr, options_.beta1, options_.beta2, decay, options_.eps,
                      /*amsgrad=*/false, /*maximize=*/false);
  }
#else
  (void)lr_tensor;
  step_plain(lr);
#endif
}

std::vector<std::pair<std::string, at::Tensor>> AdamW::state() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (size_t i = 0; i < params_.size(); ++i) {
    out.emplace_back(params_[i].name + ".exp_avg", exp_avg_[i]);
    out.emplace_back(params_[i].name + ".exp_avg_sq", exp_avg_sq_[i]);
  }
  out.emplace_back("step", at::scalar_tensor(steps_, at::kLong));
  return out;
}

void AdamW::load_state(const std::vector<std::pair<std::string, at::Tensor>>& state) {
  std::map<std::string, at::Tensor> by_name(state.begin(), state.end());
  const auto take = [&by_name](const std::string& key, at::Tensor& into) {
    const auto it = by_name.find(key);
    if (it == by_name.end()) throw std::invalid_argument("optimizer state has no '" + key + "'");
    if (!it->second.sizes().equals(into.sizes())) {
      throw std::invalid_argument("optimizer state '" + key + "' has the wrong shape");
    }
    at::NoGradGuard no_grad;
    into.copy_(it->second);
  };
  for (size_t i = 0; i < params_.size(); ++i) {
    take(params_[i].name + ".exp_avg", exp_avg_[i]);
    take(params_[i].name + ".exp_avg_sq", exp_avg_sq_[i]);
  }
  const auto it = by_name.find("step");
  if (it == by_name.end()) throw std::invalid_argument("optimizer state has no 'step'");
  steps_ = it->second.item<int64_t>();
  for (at::Tensor& count : step_counts_) count.fill_(static_cast<double>(steps_));
}

}  // namespace cpm::core::train
