// SPDX-License-Identifier: Apache-2.0
//
// The one place where LibTorch version differences live. cpmd builds against Debian 12's LibTorch
// 1.13 (CPU) and the CUDA LibTorch 2.x of the Python torch package.
#pragma once

#include <torch/version.h>

#define CPM_TORCH_VERSION_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) ||              \
   (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace cpm::core::compat {

// "1.13.0", "2.11.0".
inline constexpr const char* kTorchVersion = TORCH_VERSION;

// at::scaled_dot_product_attention (flash / memory-efficient kernels) with a `scale` argument is
// public from 2.1; 1.13 has only a private, math-only variant, so attention there uses an explicit
// softmax path (model/attention.cpp).
inline constexpr bool kHasScaledDotProductAttention = CPM_TORCH_VERSION_AT_LEAST(2, 1);

}  // namespace cpm::core::compat
