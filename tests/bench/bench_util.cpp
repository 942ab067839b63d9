// SPDX-License-Identifier: Apache-2.0
#include "bench/bench_util.h"

#ifdef CPM_BENCH_KINETO
#include <torch/csrc/autograd/profiler_kineto.h>
#endif

#include <map>

namespace cpm::bench {

std::unique_ptr<core::model::LoadedModel> load_model(const std::string& dir, const std::string& device,
                                                     double& seconds) {
  core::model::LoadOptions load;
  load.dtype = device == "cpu" ? at::kFloat : at::kBFloat16;
  load.device = c10::Device(device);
  const auto start = std::chrono::steady_clock::now();
  auto loaded = core::model::load_model(dir, load);
  seconds = seconds_since(start);
  if (!loaded.ok()) {
    std::fprintf(stderr, "%s\n", std::string(loaded.status().message()).c_str());
    return nullptr;
  }
  return *std::move(loaded);
}

std::vector<KernelTime> gpu_kernel_table(const std::function<void()>& work) {
  std::vector<KernelTime> out;
#ifdef CPM_BENCH_KINETO
  namespace prof = torch::autograd::profiler;
  const prof::ProfilerConfig config(torch::profiler::impl::ProfilerState::KINETO);
  const std::set<torch::profiler::impl::ActivityType> activities{torch::profiler::impl::ActivityType::CPU,
                                                                 torch::profiler::impl::ActivityType::CUDA};
  prof::prepareProfiler(config, activities);
  prof::enableProfiler(config, activities);
  work();
  const auto result = prof::disableProfiler();
  std::map<std::string, KernelTime> by_name;
  for (const auto& e : result->events()) {
    if (e.deviceType() != c10::DeviceType::CUDA) continue;
    KernelTime& k = by_name[e.name()];
    k.name = e.name();
    ++k.calls;
    k.seconds += static_cast<double>(e.durationNs()) * 1e-9;
  }
  for (auto& [name, k] : by_name) out.push_back(std::move(k));
  std::sort(out.begin(), out.end(), [](const KernelTime& a, const KernelTime& b) { return a.seconds > b.seconds; });
#else
  work();
#endif
  return out;
}

double gpu_kernel_seconds(const std::function<void()>& work) {
  double seconds = 0;
  for (const KernelTime& k : gpu_kernel_table(work)) seconds += k.seconds;
#ifdef CPM_BENCH_KINETO
  return seconds;
#else
  return -1;
#endif
}

}  // namespace cpm::bench
