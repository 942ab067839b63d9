// SPDX-License-Identifier: Apache-2.0
#include "common/device.h"

#include <sched.h>
#include <sys/sysinfo.h>

#include <fstream>

#ifdef CPM_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime_api.h>
#endif

namespace cpm::core {
namespace {

std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) {
        const auto start = line.find_first_not_of(' ', colon + 1);
        return start == std::string::npos ? std::string() : line.substr(start);
      }
    }
  }
  return "unknown CPU";
}

// MemAvailable (what a new allocation can get without swapping), not MemFree.
int64_t mem_available_bytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  int64_t kib = 0;
  std::string unit;
  while (in >> key >> kib >> unit) {
    if (key == "MemAvailable:") return kib * 1024;
  }
  return 0;
}

DeviceInfo cpu_device() {
  DeviceInfo d;
  d.type = "cpu";
  d.name = cpu_model_name();
  struct sysinfo si {};
  if (sysinfo(&si) == 0) d.memory_total_bytes = static_cast<int64_t>(si.totalram) * si.mem_unit;
  d.memory_free_bytes = mem_available_bytes();
  cpu_set_t set;
  d.cores = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : get_nprocs();
  return d;
}

#ifdef CPM_WITH_CUDA
std::vector<DeviceInfo> cuda_devices() {
  std::vector<DeviceInfo> out;
  const int n = static_cast<int>(c10::cuda::device_count());
  for (int i = 0; i < n; ++i) {
    const cudaDeviceProp* prop = at::cuda::getDeviceProperties(i);
    DeviceInfo d;
    d.type = "cuda";
    d.index = i;
    d.name = prop->name;
    d.compute_capability = std::to_string(prop->major) + "." + std::to_string(prop->minor);
    d.cores = prop->multiProcessorCount;
    c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(i));
    size_t free_bytes = 0, total_bytes = 0;
    if (cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess) {
      d.memory_total_bytes = static_cast<int64_t>(total_bytes);
      d.memory_free_bytes = static_cast<int64_t>(free_bytes);
    } else {
      d.memory_total_bytes = static_cast<int64_t>(prop->totalGlobalMem);
    }
    // The caching allocator sets itself up with the first CUDA tensor; before that it has nothing
    // allocated and refuses the query. Index 0 of each StatArray is the small + large aggregate.
    try {
      const auto stats =
          c10::cuda::CUDACachingAllocator::getDeviceStats(static_cast<c10::DeviceIndex>(i));
      d.memory_allocated_bytes = stats.allocated_bytes[0].current;
      d.memory_reserved_bytes = stats.reserved_bytes[0].current;
    } catch (const c10::Error&) {
      d.memory_allocated_bytes = 0;
      d.memory_reserved_bytes = 0;
    }
    out.push_back(std::move(d));
  }
  return out;
}
#endif

}  // namespace

bool cuda_available() {
#ifdef CPM_WITH_CUDA
  return c10::cuda::device_count() > 0;
#else
  return false;
#endif
}

CudaMemory cuda_memory([[maybe_unused]] int index) {
  CudaMemory m;
#ifdef CPM_WITH_CUDA
  if (index < 0 || index >= static_cast<int>(c10::cuda::device_count())) return m;
  m.total_bytes = static_cast<int64_t>(at::cuda::getDeviceProperties(static_cast<c10::DeviceIndex>(index))->totalGlobalMem);
  try {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(static_cast<c10::DeviceIndex>(index));
    m.allocated_bytes = stats.allocated_bytes[0].current;
    m.reserved_bytes = stats.reserved_bytes[0].current;
    m.peak_allocated_bytes = stats.allocated_bytes[0].peak;
    m.peak_reserved_bytes = stats.reserved_bytes[0].peak;
  } catch (const c10::Error&) {
  }
#endif
  return m;
}

void reset_cuda_peak_memory([[maybe_unused]] int index) {
#ifdef CPM_WITH_CUDA
  try {
    c10::cuda::CUDACachingAllocator::resetPeakStats(static_cast<c10::DeviceIndex>(index));
  } catch (const c10::Error&) {
  }
#endif
}

void cuda_synchronize([[maybe_unused]] int index) {
#ifdef CPM_WITH_CUDA
  if (cuda_available()) {
    c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(index));
    c10::cuda::device_synchronize();
  }
#endif
}

std::vector<DeviceInfo> list_devices() {
  std::vector<DeviceInfo> out;
#ifdef CPM_WITH_CUDA
  if (cuda_available()) out = cuda_devices();
#endif
  out.push_back(cpu_device());
  return out;
}

}  // namespace cpm::core
