// SPDX-License-Identifier: Apache-2.0
#include "model/cuda/decode_kernels.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace cpm::core::model::cuda {
namespace {

using bf16 = __nv_bfloat16;
constexpr int kThreads = 256;

__device__ __forceinline__ float round_bf16(float v) { return __bfloat162float(__float2bfloat16_rn(v)); }

// Eight bf16 values of a 16-byte load as four pairs.
__device__ __forceinline__ const __nv_bfloat162* pairs(const uint4& v) {
  return reinterpret_cast<const __nv_bfloat162*>(&v);
}
__device__ __forceinline__ __nv_bfloat162* pairs(uint4& v) { return reinterpret_cast<__nv_bfloat162*>(&v); }

// acc + a . b over eight bf16 pairs, in float32.
__device__ __forceinline__ float dot8(const uint4& a, const uint4& b, float acc) {
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const float2 fa = __bfloat1622float2(pairs(a)[j]), fb = __bfloat1622float2(pairs(b)[j]);
    acc = fmaf(fa.x, fb.x, acc);
    acc = fmaf(fa.y, fb.y, acc);
  }
  return acc;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// The sum of `v` over a block of kThreads threads, returned to every thread.
__device__ float block_sum(float v) {
  __shared__ float partial[kThreads / 32];
  v = warp_sum(v);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
  __syncthreads();
  v = threadIdx.x % 32 < kThreads / 32 ? partial[threadIdx.x % 32] : 0.f;
  return warp_sum(v);
}

// One block per row; `vecs` = dim / 8.
__global__ void rms_norm_kernel(const uint4* x, const uint4* weight, uint4* out, int64_t vecs, float inv_dim,
                                float eps) {
  const uint4* row = x + blockIdx.x * vecs;
  float squares = 0.f;
  for (int64_t i = threadIdx.x; i < vecs; i += kThreads) {
    const uint4 v = row[i];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float2 f = __bfloat1622float2(pairs(v)[j]);
      squares = fmaf(f.x, f.x, squares);
      squares = fmaf(f.y, f.y, squares);
    }
  }
  const float scale = rsqrtf(block_sum(squares) * inv_dim + eps);
  for (int64_t i = threadIdx.x; i < vecs; i += kThreads) {
    const uint4 v = row[i], w = weight[i];
    uint4 r;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float2 f = __bfloat1622float2(pairs(v)[j]), g = __bfloat1622float2(pairs(w)[j]);
      // The normalised value rounded to bf16 first, then the weight: the reference's two roundings.
      pairs(r)[j] = __floats2bfloat162_rn(g.x * round_bf16(f.x * scale), g.y * round_bf16(f.y * scale));
    }
    out[blockIdx.x * vecs + i] = r;
  }
}

// Block (row n, head h) of H + 2 Hkv heads, head_dim / 2 threads: thread i computes elements i and
// i + half. rotate_half(x) = [-x2, x1], so out = bf16(bf16(x * cos) + bf16(rotate_half(x) * sin)).
__global__ void rope_cache_kernel(RopeCacheArgs a) {
  const int64_t n = blockIdx.x, h = blockIdx.y, i = threadIdx.x, dh = a.head_dim, half = dh / 2;
  const bf16* src = static_cast<const bf16*>(a.qkv) + n * a.row_stride + h * dh;
  const int64_t batch = n / a.tokens, slot = a.positions[n % a.tokens];
  const int64_t cache_offset = batch * a.cache_batch_stride + slot * a.cache_slot_stride;
  if (h >= a.heads + a.kv_heads) {  // v: copied into its slot
    bf16* dst = static_cast<bf16*>(a.value_cache) + cache_offset + (h - a.heads - a.kv_heads) * a.cache_head_stride;
    dst[i] = src[i];
    dst[i + half] = src[i + half];
    return;
  }
  const bf16* cos = static_cast<const bf16*>(a.cos) + n * dh;
  const bf16* sin = static_cast<const bf16*>(a.sin) + n * dh;
  const float x1 = __bfloat162float(src[i]), x2 = __bfloat162float(src[i + half]);
  const float lo = round_bf16(x1 * __bfloat162float(cos[i])) + round_bf16(-x2 * __bfloat162float(sin[i]));
  const float hi = round_bf16(x2 * __bfloat162float(cos[i + half])) + round_bf16(x1 * __bfloat162float(sin[i + half]));
  bf16* dst = h < a.heads ? static_cast<bf16*>(a.q_out) + (n * a.heads + h) * dh
                          : static_cast<bf16*>(a.key_cache) + cache_offset + (h - a.heads) * a.cache_head_stride;
  dst[i] = __float2bfloat16_rn(lo);
  dst[i + half] = __float2bfloat16_rn(hi);
}

// One thread per eight outputs; `vecs` = inter / 8, `total` = rows * vecs.
__global__ void silu_mul_kernel(const uint4* gate_up, uint4* out, int64_t vecs, int64_t total) {
  const int64_t index = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (index >= total) return;
  const int64_t row = index / vecs, col = index % vecs;
  const uint4 g = gate_up[row * 2 * vecs + col], u = gate_up[row * 2 * vecs + vecs + col];
  uint4 r;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const float2 gf = __bfloat1622float2(pairs(g)[j]), uf = __bfloat1622float2(pairs(u)[j]);
    // silu as ATen computes it (x / (1 + exp(-x)) in float32), rounded, then times up.
    const float s0 = round_bf16(gf.x / (1.f + expf(-gf.x))), s1 = round_bf16(gf.y / (1.f + expf(-gf.y)));
    pairs(r)[j] = __floats2bfloat162_rn(s0 * uf.x, s1 * uf.y);
  }
  out[index] = r;
}

// One warp per output row, 32 lanes striding over its 16-byte chunks, four loads in flight each.
// The weights are read once (streaming loads, so they do not evict x from the cache).
template <bool kBias, bool kAccumulate>
__global__ void gemv_kernel(const uint4* w, int64_t row_vecs, const uint4* x, const bf16* bias, bf16* out,
                            int64_t n, int64_t k_vecs, float scale) {
  const int lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (kThreads / 32) + threadIdx.x / 32;
  if (row >= n) return;  // the whole warp: rows are per warp
  const uint4* wr = w + row * row_vecs;
  float acc = 0.f;
  int64_t i = lane;
  for (; i + 96 < k_vecs; i += 128) {
    const uint4 w0 = __ldcs(wr + i), w1 = __ldcs(wr + i + 32), w2 = __ldcs(wr + i + 64), w3 = __ldcs(wr + i + 96);
    acc = dot8(w0, __ldg(x + i), acc);
    acc = dot8(w1, __ldg(x + i + 32), acc);
    acc = dot8(w2, __ldg(x + i + 64), acc);
    acc = dot8(w3, __ldg(x + i + 96), acc);
  }
  for (; i < k_vecs; i += 32) acc = dot8(__ldcs(wr + i), __ldg(x + i), acc);
  acc = warp_sum(acc) * scale;
  if (lane == 0) {
    if (kBias) acc += __bfloat162float(bias[row]);
    if (kAccumulate) acc += __bfloat162float(out[row]);
    out[row] = __float2bfloat16_rn(acc);
  }
}

const char* launched() {
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? nullptr : cudaGetErrorString(e);
}

int64_t blocks(int64_t work, int64_t per_block) { return (work + per_block - 1) / per_block; }

}  // namespace

const char* rms_norm(const void* x, const void* weight, void* out, int64_t rows, int64_t dim, float eps,
                     void* stream) {
  rms_norm_kernel<<<static_cast<unsigned>(rows), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      static_cast<const uint4*>(x), static_cast<const uint4*>(weight), static_cast<uint4*>(out), dim / 8,
      1.f / static_cast<float>(dim), eps);
  return launched();
}

const char* rope_and_cache(const RopeCacheArgs& args, void* stream) {
  const dim3 grid(static_cast<unsigned>(args.rows), static_cast<unsigned>(args.heads + 2 * args.kv_heads));
  rope_cache_kernel<<<grid, static_cast<unsigned>(args.head_dim / 2), 0, static_cast<cudaStream_t>(stream)>>>(args);
  return launched();
}

const char* silu_mul(const void* gate_up, void* out, int64_t rows, int64_t inter, void* stream) {
  const int64_t total = rows * (inter / 8);
  silu_mul_kernel<<<static_cast<unsigned>(blocks(total, kThreads)), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      static_cast<const uint4*>(gate_up), static_cast<uint4*>(out), inter / 8, total);
  return launched();
}

const char* gemv(const void* w, int64_t row_stride, const void* x, const void* bias, void* out, int64_t n,
                 int64_t k, float scale, bool accumulate, void* stream) {
  const unsigned grid = static_cast<unsigned>(blocks(n, kThreads / 32));
  const auto s = static_cast<cudaStream_t>(stream);
  const auto* wv = static_cast<const uint4*>(w);
  const auto* xv = static_cast<const uint4*>(x);
  const auto* b = static_cast<const bf16*>(bias);
  auto* o = static_cast<bf16*>(out);
  if (bias != nullptr && accumulate) {
    gemv_kernel<true, true><<<grid, kThreads, 0, s>>>(wv, row_stride / 8, xv, b, o, n, k / 8, scale);
  } else if (bias != nullptr) {
    gemv_kernel<true, false><<<grid, kThreads, 0, s>>>(wv, row_stride / 8, xv, b, o, n, k / 8, scale);
  } else if (accumulate) {
    gemv_kernel<false, true><<<grid, kThreads, 0, s>>>(wv, row_stride / 8, xv, b, o, n, k / 8, scale);
  } else {
    gemv_kernel<false, false><<<grid, kThreads, 0, s>>>(wv, row_stride / 8, xv, b, o, n, k / 8, scale);
  }
  return launched();
}

}  // namespace cpm::core::model::cuda
