// SPDX-License-Identifier: Apache-2.0
//
// AdamW as torch.optim.AdamW computes it (decoupled weight decay, bias-corrected moments, eps
// added after the square root), on a fixed list of parameters. On CUDA with LibTorch >= 2.1 it is
// the fused multi-tensor kernel (what the reference's HF Trainer uses, `adamw_torch_fused`); on
// the CPU the same formula tensor by tensor. Moments are kept in each parameter's dtype, as torch.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace cpm::core::train {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
};

// One trainable tensor. `decay` is false for biases and LayerNorm weights (see decays()).
struct TrainableParam {
  std::string name;
  at::Tensor tensor;  // requires grad; updated in place
  bool decay = true;
};

// The Hugging Face Trainer's rule for this model: no decay on names containing "bias"
// (resampler.attn.in_proj_bias included) and on nn.LayerNorm weights
// (the vision tower's layer_norm1/2 and post_layernorm, the resampler's ln_q/ln_kv/ln_post).
// Qwen2's RMSNorm is not an nn.LayerNorm, so HF decays its weights, and so does this.
bool decays(const std::string& name);

class AdamW {
 public:
  AdamW(std::vector<TrainableParam> params, const AdamWOptions& options);

  // One update with learning rate `lr` from each parameter's .grad (parameters without a grad
  // are skipped, as torch does).
  void step(double lr);
  // The same update with the learning rate read on the device from `lr` (a float32 scalar on the
  // parameters' device). Launches device work only and leaves steps() alone, so that a captured
  // CUDA graph can replay it with a new rate each time: count each update with count_step().
  // REQUIRES: device_lr().
  void step_on_device(const at::Tensor& lr);
  void count_step() { ++steps_; }
  int64_t steps() const { return steps_; }
  // Whether updates run the fused CUDA kernel (CUDA parameters, LibTorch >= 2.1), and whether it
  // can read the learning rate from the device (LibTorch >= 2.4).
  bool fused() const { return fused_; }
  bool device_lr() const;

  // State for checkpoints: "<name>.exp_avg", "<name>.exp_avg_sq" and "step".
  std::vector<std::pair<std::string, at::Tensor>> state() const;
  // Restores state() output; throws std::invalid_argument naming a missing or mis-shaped entry.
  void load_state(const std::vector<std::pair<std::string, at::Tensor>>& state);

  const std::vector<TrainableParam>& params() const { return params_; }

 private:
  void step_fused(double lr, const at::Tensor* lr_tensor);
  void step_plain(double lr);

  std::vector<TrainableParam> params_;
  AdamWOptions options_;
  std::vector<at::Tensor> exp_avg_, exp_avg_sq_;
  // The fused kernel's per-parameter step counts (float32 scalars on the device, advanced by the
  // kernel itself), kept so that a step launches no extra fills.
  std::vector<at::Tensor> step_counts_;
  int64_t steps_ = 0;
  bool fused_ = false;
};

}  // namespace cpm::core::train
