// SPDX-License-Identifier: Apache-2.0
//
// The fused CUDA kernels of model/cuda/decode_kernels.h on tensors, for the inference way of the
// Qwen2 decoder. Each op computes what the ATen ops it replaces compute (same roundings; gemv
// sums in another order, as any other GEMV kernel would). The model asks applies() first and
// keeps its ATen path for everything else: the CPU, other dtypes, autograd, builds without nvcc.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace cpm::core::model::fused {

// Whether this build has the kernels (CUDA LibTorch and nvcc at build time).
bool built();
// Turns the kernels off (or on again) for the whole process: for tests and benchmarks that compare
// them with the ATen path. On by default; the environment variable CPM_FUSED_KERNELS=0 turns them off.
void set_enabled(bool enabled);
// Whether the kernels are built and enabled and `t` is a bfloat16 CUDA tensor that no autograd
// graph is recording.
bool applies(const at::Tensor& t);

// Qwen2's RMSNorm of x [.., D] (D % 8 == 0): weight * bf16(x * rsqrt(mean(x^2) + eps)).
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

// RoPE on q and k of `qkv` [B * T, (H + 2 Hkv) * Dh] (rows contiguous) with cos, sin [B, T, Dh]
// (the activations' dtype), k and v written into the static cache's slots `positions` [T] of
// `keys` / `values` [B, Hkv, capacity, Dh]: returns q [B, T, H, Dh].
at::Tensor rope_into_cache(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin, int64_t heads,
                           int64_t kv_heads, at::Tensor& keys, at::Tensor& values, const at::Tensor& positions);

// silu(gate) * up for gate_up [N, 2I] (gate | up per row): [N, I].
at::Tensor silu_mul(const at::Tensor& gate_up);

// For a single row x [1, K]: whether gemv can multiply it with `weight` [N, K] (alignment, K % 8).
bool gemv_applies(const at::Tensor& x, const at::Tensor& weight);
// x [1, K] times weight [N, K] transposed, plus bias [N] when defined: [1, N].
at::Tensor gemv(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias = {});
// out [1, N] += scale * x [1, K] times weight transposed (as out.addmm_(x, weight.t(), 1, scale)).
// `out` contiguous.
void gemv_add_(at::Tensor& out, const at::Tensor& x, const at::Tensor& weight, double scale = 1.0);

}  // namespace cpm::core::model::fused
