// SPDX-License-Identifier: Apache-2.0
#include "common/device.h"

#include <gtest/gtest.h>

#include "common/build_info.h"
#include "common/torch_compat.h"

namespace cpm::core {
namespace {

TEST(Device, ListsTheHostCpuLast) {
  const std::vector<DeviceInfo> devices = list_devices();
  ASSERT_FALSE(devices.empty());
  const DeviceInfo& cpu = devices.back();
  EXPECT_EQ(cpu.type, "cpu");
  EXPECT_FALSE(cpu.name.empty());
  EXPECT_GE(cpu.cores, 1);
  EXPECT_GT(cpu.memory_total_bytes, int64_t{256} << 20);
  EXPECT_GT(cpu.memory_free_bytes, 0);
  EXPECT_LE(cpu.memory_free_bytes, cpu.memory_total_bytes);
}

TEST(Device, CudaDevicesComeFirstAndAreComplete) {
  const std::vector<DeviceInfo> devices = list_devices();
  size_t cuda = 0;
  for (const DeviceInfo& d : devices) {
    if (d.type != "cuda") continue;
    EXPECT_EQ(d.index, static_cast<int>(cuda)) << "CUDA devices must come first, in order";
    EXPECT_FALSE(d.compute_capability.empty());
    EXPECT_GT(d.memory_total_bytes, 0);
    ++cuda;
  }
  EXPECT_EQ(cuda > 0, cuda_available());
  if (!build_info().cuda) {
    EXPECT_EQ(cuda, 0u);
  }
}

TEST(BuildInfo, DescribesThisBuild) {
  const BuildInfo& b = build_info();
  EXPECT_FALSE(b.version.empty());
  EXPECT_FALSE(b.git_commit.empty());
  EXPECT_EQ(b.torch_version, compat::kTorchVersion);
  EXPECT_EQ(compat::kHasScaledDotProductAttention, b.torch_version.rfind("1.", 0) != 0);
  EXPECT_EQ(b.image_decoder, CPM_EXPECT_IMAGE_DECODER);
}

}  // namespace
}  // namespace cpm::core
