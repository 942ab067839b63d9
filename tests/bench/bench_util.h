// SPDX-License-Identifier: Apache-2.0
//
// Shared by the GPU benchmarks: loading the model onto the device, timing, medians and GPU kernel
// time from the Kineto profiler (when the LibTorch build has it).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <memory>
#include <vector>

#include "model/load.h"

namespace cpm::bench {

inline double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : (v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2);
}

// The checkpoint in bf16 on `device` ("cuda:0"), or float32 for "cpu" (a smoke test on the tiny
// model); the load time in `seconds`. Prints the error and returns null on failure.
std::unique_ptr<core::model::LoadedModel> load_model(const std::string& dir, const std::string& device,
                                                     double& seconds);

// The CUDA kernels (and memcpy/memset) `work` launches, by name, from the Kineto profiler; empty
// when this build cannot profile.
struct KernelTime {
  std::string name;
  int64_t calls = 0;
  double seconds = 0;
};
std::vector<KernelTime> gpu_kernel_table(const std::function<void()>& work);

// Their total duration in seconds; negative when this build cannot profile.
double gpu_kernel_seconds(const std::function<void()>& work);

}  // namespace cpm::bench
