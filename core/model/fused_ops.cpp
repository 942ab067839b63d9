// SPDX-License-Identifier: Apache-2.0
#include "model/fused_ops.h"

#include <ATen/ops/empty.h>
#include <c10/core/GradMode.h>
#include <c10/util/Exception.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#ifdef CPM_WITH_CUDA_KERNELS
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "model/cuda/decode_kernels.h"
#endif

namespace cpm::core::model::fused {
namespace {

std::atomic<bool>& enabled() {
  static std::atomic<bool> on{[] {
    const char* env = std::getenv("CPM_FUSED_KERNELS");
    return env == nullptr || std::strcmp(env, "0") != 0;
  }()};
  return on;
}

#ifdef CPM_WITH_CUDA_KERNELS
bool aligned(const at::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0; }

// `t` contiguous and 16-byte aligned: itself when it already is, else a fresh copy.
at::Tensor aligned_contiguous(const at::Tensor& t) {
  at::Tensor c = t.contiguous();
  return aligned(c) ? c : c.clone();
}

void check(const char* error, const char* op) {
  TORCH_CHECK(error == nullptr, "fused CUDA kernel ", op, " failed: ", error);
}

void* stream(const at::Tensor& t) { return c10::cuda::getCurrentCUDAStream(t.device().index()).stream(); }

// Whether CUDA device `index` can run the kernels: compute capability 8.0 (bf16 arithmetic) or
// newer; older cards keep LibTorch's operators. Asked once per device.
bool capable(c10::DeviceIndex index) {
  static std::array<std::atomic<int8_t>, 64> known{};  // 0 unknown, 1 yes, 2 no
  if (index < 0) index = c10::cuda::current_device();
  if (index >= static_cast<c10::DeviceIndex>(known.size())) return false;
  int8_t v = known[index].load();
  if (v == 0) {
    v = at::cuda::getDeviceProperties(index)->major >= 8 ? 1 : 2;
    known[index].store(v);
  }
  return v == 1;
}
#else
bool capable(int) { return false; }
#endif

}  // namespace

bool built() {
#ifdef CPM_WITH_CUDA_KERNELS
  return true;
#else
  return false;
#endif
}

void set_enabled(bool on) { enabled() = on; }

bool applies(const at::Tensor& t) {
  return built() && enabled() && t.defined() && t.is_cuda() && t.scalar_type() == at::kBFloat16 &&
         !(at::GradMode::is_enabled() && t.requires_grad()) && capable(t.device().index());
}

#ifdef CPM_WITH_CUDA_KERNELS

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  const int64_t dim = x.size(-1);
  TORCH_CHECK(dim % 8 == 0, "fused rms_norm: hidden size ", dim, " is not a multiple of 8");
  TORCH_CHECK(weight.numel() == dim && weight.scalar_type() == x.scalar_type() && weight.device() == x.device(),
              "fused rms_norm: weight ", weight.sizes(), " does not match x ", x.sizes());
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor in = aligned_contiguous(x), w = aligned_contiguous(weight);
  at::Tensor out = at::empty(in.sizes(), in.options());
  check(cuda::rms_norm(in.data_ptr(), w.data_ptr(), out.data_ptr(), in.numel() / dim, dim, static_cast<float>(eps),
                       stream(in)),
        "rms_norm");
  return out;
}

at::Tensor rope_into_cache(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin, int64_t heads,
                           int64_t kv_heads, at::Tensor& keys, at::Tensor& values, const at::Tensor& positions) {
  TORCH_CHECK(cos.dim() == 3 && sin.sizes() == cos.sizes(), "fused rope_into_cache: cos/sin must be [B, T, Dh]");
  for (const at::Tensor* t : std::array<const at::Tensor*, 4>{&cos, &sin, &keys, &values}) {
    TORCH_CHECK(t->scalar_type() == qkv.scalar_type() && t->device() == qkv.device(),
                "fused rope_into_cache: cos, sin and the cache must be ", qkv.scalar_type(), " on ", qkv.device());
  }
  const int64_t batch = cos.size(0), tokens = cos.size(1), head_dim = cos.size(2);
  TORCH_CHECK(qkv.dim() == 2 && qkv.stride(1) == 1 && qkv.size(0) == batch * tokens &&
                  qkv.size(1) == (heads + 2 * kv_heads) * head_dim && head_dim % 2 == 0,
              "fused rope_into_cache: qkv ", qkv.sizes(), " does not match cos ", cos.sizes());
  TORCH_CHECK(keys.sizes() == values.sizes() && keys.strides() == values.strides() && keys.stride(3) == 1 &&
                  keys.size(0) == batch && keys.size(1) == kv_heads && keys.size(3) == head_dim,
              "fused rope_into_cache: cache ", keys.sizes(), " does not match");
  TORCH_CHECK(positions.numel() == tokens && positions.scalar_type() == at::kLong && positions.is_cuda(),
              "fused rope_into_cache: write positions must be int64 [T] on the device");
  const c10::cuda::CUDAGuard guard(qkv.device());
  const at::Tensor c = cos.contiguous(), s = sin.contiguous(), p = positions.contiguous();
  at::Tensor q = at::empty({batch, tokens, heads, head_dim}, qkv.options());
  cuda::RopeCacheArgs args{qkv.data_ptr(),       qkv.stride(0),    c.data_ptr(),     s.data_ptr(),
                           q.data_ptr(),         keys.data_ptr(),  values.data_ptr(), keys.stride(0),
                           keys.stride(1),       keys.stride(2),   p.data_ptr<int64_t>(),
                           batch * tokens,       tokens,           heads,            kv_heads,
                           head_dim};
  check(cuda::rope_and_cache(args, stream(qkv)), "rope_and_cache");
  return q;
}

at::Tensor silu_mul(const at::Tensor& gate_up) {
  TORCH_CHECK(gate_up.dim() == 2 && gate_up.size(1) % 16 == 0, "fused silu_mul: ", gate_up.sizes(),
              " is not [N, 2I], I % 8 == 0");
  const int64_t inter = gate_up.size(1) / 2;
  const c10::cuda::CUDAGuard guard(gate_up.device());
  const at::Tensor in = aligned_contiguous(gate_up);
  at::Tensor out = at::empty({in.size(0), inter}, in.options());
  check(cuda::silu_mul(in.data_ptr(), out.data_ptr(), in.size(0), inter, stream(in)), "silu_mul");
  return out;
}

bool gemv_applies(const at::Tensor& x, const at::Tensor& weight) {
  return applies(x) && applies(weight) && x.dim() == 2 && x.size(0) == 1 && weight.dim() == 2 &&
         x.size(1) == weight.size(1) && x.size(1) % 8 == 0 && weight.stride(1) == 1 && weight.stride(0) % 8 == 0 &&
         aligned(weight);
}

at::Tensor gemv(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  TORCH_CHECK(gemv_applies(x, weight), "fused gemv: ", x.sizes(), " x ", weight.sizes(), " does not fit");
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor in = aligned_contiguous(x);
  TORCH_CHECK(!bias.defined() || (bias.numel() == weight.size(0) && bias.scalar_type() == at::kBFloat16),
              "fused gemv: bias ", bias.sizes(), " does not match ", weight.sizes());
  const at::Tensor b = bias.defined() ? bias.contiguous() : bias;
  at::Tensor out = at::empty({1, weight.size(0)}, x.options());
  check(cuda::gemv(weight.data_ptr(), weight.stride(0), in.data_ptr(), b.defined() ? b.data_ptr() : nullptr,
                   out.data_ptr(), weight.size(0), weight.size(1), /*scale=*/1.f, /*accumulate=*/false, stream(in)),
        "gemv");
  return out;
}

void gemv_add_(at::Tensor& out, const at::Tensor& x, const at::Tensor& weight, double scale) {
  TORCH_CHECK(gemv_applies(x, weight) && out.is_contiguous() && out.numel() == weight.size(0) &&
                  out.scalar_type() == at::kBFloat16 && !out.is_alias_of(x),
              "fused gemv_add_: ", x.sizes(), " x ", weight.sizes(), " into ", out.sizes(), " does not fit");
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor in = aligned_contiguous(x);
  check(cuda::gemv(weight.data_ptr(), weight.stride(0), in.data_ptr(), nullptr, out.data_ptr(), weight.size(0),
                   weight.size(1), static_cast<float>(scale), /*accumulate=*/true, stream(in)),
        "gemv");
}

#else  // no kernels: applies() is false, so the model never calls these.

at::Tensor rms_norm(const at::Tensor&, const at::Tensor&, double) { TORCH_CHECK(false, "no fused kernels in this build"); }
at::Tensor rope_into_cache(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t, int64_t, at::Tensor&,
                           at::Tensor&, const at::Tensor&) {
  TORCH_CHECK(false, "no fused kernels in this build");
}
at::Tensor silu_mul(const at::Tensor&) { TORCH_CHECK(false, "no fused kernels in this build"); }
bool gemv_applies(const at::Tensor&, const at::Tensor&) { return false; }
at::Tensor gemv(const at::Tensor&, const at::Tensor&, const at::Tensor&) {
  TORCH_CHECK(false, "no fused kernels in this build");
}
void gemv_add_(at::Tensor&, const at::Tensor&, const at::Tensor&, double) { TORCH_CHECK(false, "no fused kernels in this build"); }

#endif

}  // namespace cpm::core::model::fused
