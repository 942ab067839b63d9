// SPDX-License-Identifier: Apache-2.0
//
// Activation (gradient) checkpointing: run a block without keeping its intermediate activations
// and recompute them in the backward pass, trading one extra forward per block for memory, as
// torch.utils.checkpoint does for the reference's decoder layers. fn must compute the same values
// when rerun: random masks (dropout) are drawn outside it and captured, rather than replayed from
// the generator's state as torch does, which a captured CUDA graph could not do.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <vector>

namespace cpm::core::model {

// fn(x) with gradients flowing to `x` (if it requires grad) and to `params`, the tensors fn uses
// that require grad. Tensors fn captures that are not in `params` get no gradient.
at::Tensor checkpointed(const std::function<at::Tensor(const at::Tensor&)>& fn, const at::Tensor& x,
                        const std::vector<at::Tensor>& params);

}  // namespace cpm::core::model
