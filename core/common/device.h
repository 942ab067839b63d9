// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace cpm::core {

// A compute device as reported to operators (Admin.GetInfo, /metrics).
struct DeviceInfo {
  std::string type;                // "cuda" or "cpu"
  int index = 0;                   // CUDA ordinal; 0 for the CPU
  std::string name;                // "NVIDIA H100 80GB HBM3", or the CPU model
  std::string compute_capability;  // "9.0"; empty for the CPU
  int64_t memory_total_bytes = 0;  // device memory; host memory for the CPU
  int64_t memory_free_bytes = 0;
  int64_t memory_allocated_bytes = 0;  // by this process's tensors (CUDA only)
  int64_t memory_reserved_bytes = 0;   // by its caching allocator (CUDA only)
  int cores = 0;                       // SMs for CUDA, usable logical cores for the CPU
};

// CUDA devices first (only in a CUDA build with a visible GPU), then the host CPU. Thread-safe.
// The first CUDA query creates a CUDA context on each device.
std::vector<DeviceInfo> list_devices();

// True in a CUDA build with at least one visible GPU.
bool cuda_available();

// The caching allocator's counters for CUDA device `index` (all zero without CUDA or before the
// first CUDA tensor). Peaks count from process start or the last reset_cuda_peak_memory().
struct CudaMemory {
  int64_t total_bytes = 0;  // the card's capacity
  int64_t allocated_bytes = 0, reserved_bytes = 0;
  int64_t peak_allocated_bytes = 0, peak_reserved_bytes = 0;
};
CudaMemory cuda_memory(int index);
void reset_cuda_peak_memory(int index);
// Waits for the work queued on device `index` (a no-op without CUDA); for honest timings.
void cuda_synchronize(int index);

}  // namespace cpm::core
