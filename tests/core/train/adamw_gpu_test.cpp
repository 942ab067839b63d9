// SPDX-License-Identifier: Apache-2.0
//
// The fused CUDA AdamW (LibTorch >= 2.1) against the plain one on the CPU: the same updates,
// the first step's lr of 0 (HF's warmup starts there) included. The fused kernel once received
// step counts of 0 and turned every parameter into NaN on its first step.
#include <ATen/TensorOperators.h>
#include <ATen/ops/isfinite.h>
#include <ATen/ops/randn.h>
#include <gtest/gtest.h>

#include "common/device.h"
#include "train/adamw.h"

namespace cpm::core::train {
namespace {

TEST(AdamWGpu, FusedCudaStepsEqualThePlainCpuSteps) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    at::manual_seed(0);
    const at::Tensor init = at::randn({64, 32}).to(dtype);
    const at::Tensor bias0 = at::randn({32}).to(dtype);
    const auto make = [&](c10::Device device) {
      std::vector<TrainableParam> params = {{"w", init.to(device).clone().requires_grad_(true), true},
                                            {"b", bias0.to(device).clone().requires_grad_(true), false}};
      return params;
    };
    std::vector<TrainableParam> cpu = make(c10::Device(c10::kCPU)), gpu = make(c10::Device(c10::kCUDA));
    AdamW plain(cpu, {}), fused(gpu, {});
    const double lrs[] = {0.0, 1e-2, 5e-3};
    for (int step = 0; step < 3; ++step) {
      const at::Tensor gw = at::randn({64, 32}).to(dtype), gb = at::randn({32}).to(dtype);
      cpu[0].tensor.mutable_grad() = gw.clone();
      cpu[1].tensor.mutable_grad() = gb.clone();
      gpu[0].tensor.mutable_grad() = gw.cuda();
      gpu[1].tensor.mutable_grad() = gb.cuda();
      plain.step(lrs[step]);
      fused.step(lrs[step]);
      for (size_t i = 0; i < cpu.size(); ++i) {
        const at::Tensor got = gpu[i].tensor.detach().cpu().to(at::kFloat);
        const at::Tensor want = cpu[i].tensor.detach().to(at::kFloat);
        ASSERT_TRUE(at::isfinite(got).all().item<bool>()) << cpu[i].name << " step " << step + 1;
        // bf16: the fused kernel rounds once, the plain ops after each op (about one ulp apart).
        const double tol = dtype == at::kFloat ? 1e-5 : 1e-2;
        EXPECT_LE(((got - want).abs() / (want.abs() + 1)).max().template item<double>(), tol)
            << cpu[i].name << " step " << step + 1;
      }
    }
    if (dtype == at::kFloat) {
      // lr 0 left the weights where they were; the later steps moved them.
      EXPECT_GT((gpu[0].tensor.detach().cpu() - init).abs().max().item<double>(), 1e-4);
    }
  }
}

}  // namespace
}  // namespace cpm::core::train
