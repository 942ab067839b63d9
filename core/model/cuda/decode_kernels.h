// SPDX-License-Identifier: Apache-2.0
//
// Fused bfloat16 CUDA kernels for the inference way of the Qwen2 decoder (model/qwen2.h), built
// only where nvcc and a CUDA LibTorch are (CPM_WITH_CUDA_KERNELS). A batch-1 decode step is a few
// hundred launches of tiny kernels around the weight reads; these replace about ten of them per
// layer with three, and cuBLAS's split-K GEMV with one that reads each weight row once.
//
// No LibTorch here (nvcc compiles this file alone): raw device pointers, bf16 values passed as
// void*, `stream` a cudaStream_t. model/fused_ops.h checks shapes, strides and alignment, and is
// the API the model uses. Each function returns nullptr or the CUDA error of its launch.
// Rounding matches the ATen ops they replace: each product rounded to bf16 where ATen rounds it
// (sums, RMSNorm's and the GEMV's, are float32 in another order).
#pragma once

#include <cstdint>

namespace cpm::core::model::cuda {

// out[r] = w * bf16(x[r] * rsqrt(mean(x[r]^2) + eps)) for rows r of x [rows, dim] (float32 inside,
// as Qwen2's RMSNorm). dim % 8 == 0, every pointer 16-byte aligned, rows contiguous.
const char* rms_norm(const void* x, const void* weight, void* out, int64_t rows, int64_t dim, float eps,
                     void* stream);

// RoPE (rotate-half) on q and k of `qkv` [n, row_stride] (q [H*Dh] | k [Hkv*Dh] | v [Hkv*Dh] per row,
// row n = token t of batch row n / tokens), writing:
//   q_out [n, H*Dh] (contiguous): the rotated q;
//   key_cache / value_cache [B, Hkv, capacity, Dh] (element strides batch/head/slot, last 1): the
//   rotated k and the v of token t at slot positions[t] (int64, device).
// cos, sin: [n, Dh] contiguous, in bf16 as the reference casts them.
struct RopeCacheArgs {
  const void* qkv;
  int64_t row_stride;
  const void* cos;
  const void* sin;
  void* q_out;
  void* key_cache;
  void* value_cache;
  int64_t cache_batch_stride, cache_head_stride, cache_slot_stride;
  const int64_t* positions;
  int64_t rows, tokens, heads, kv_heads, head_dim;
};
const char* rope_and_cache(const RopeCacheArgs& args, void* stream);

// out [rows, inter] = bf16(silu(gate)) * up for gate_up [rows, 2 * inter] (gate | up per row).
// inter % 8 == 0, pointers 16-byte aligned, both contiguous.
const char* silu_mul(const void* gate_up, void* out, int64_t rows, int64_t inter, void* stream);

// One row times a matrix: out [n] = scale * (x [k] . w[j]) (+ bias [n]) (+ out's own values when
// `accumulate`), accumulated in float32 and rounded once, as cuBLAS's epilogue does. w: [n, k]
// with row stride `row_stride`; k and row_stride % 8 == 0, w and x 16-byte aligned.
const char* gemv(const void* w, int64_t row_stride, const void* x, const void* bias, void* out, int64_t n,
                 int64_t k, float scale, bool accumulate, void* stream);

}  // namespace cpm::core::model::cuda
