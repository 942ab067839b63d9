// SPDX-License-Identifier: Apache-2.0
#include "model_host.h"

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/device.h"
#include "common/guard.h"
#include "common/host_memory.h"
#include "common/logging.h"
#include "model/load.h"
#include "runtime/engine.h"

namespace cpm::server {
namespace {

using core::runtime::Engine;

int cuda_device_count() {
  int n = 0;
  for (const core::DeviceInfo& d : core::list_devices()) n += d.type == "cuda" ? 1 : 0;
  return n;
}

core::runtime::EngineOptions engine_options(
    const DaemonConfig& config, std::shared_ptr<core::runtime::EngineObserver> observer) {
  core::runtime::EngineOptions options;
  options.max_batch_size = static_cast<int>(config.max_batch_size);
  options.max_wait = std::chrono::milliseconds(config.max_batch_wait_ms);
  options.max_queue = static_cast<int>(config.max_queue);
  options.adapter_budget_bytes = config.adapter_memory_budget_bytes;
  options.observer = std::move(observer);
  return options;
}

}  // namespace

struct ModelHost::Placement {
  c10::Device device = c10::Device(c10::DeviceType::CPU);
  c10::ScalarType dtype = c10::ScalarType::Float;
};

absl::StatusOr<std::unique_ptr<ModelHost>> ModelHost::create(
    const DaemonConfig& config, std::shared_ptr<core::runtime::EngineObserver> observer) {
  auto placement = std::make_unique<Placement>();
  if (config.device == "auto") {
    if (core::cuda_available()) placement->device = c10::Device(c10::DeviceType::CUDA, 0);
  } else if (config.device != "cpu") {
    const int index = config.device == "cuda" ? 0 : std::stoi(config.device.substr(5));
    const int available = core::cuda_available() ? cuda_device_count() : 0;
    if (index >= available) {
      return absl::FailedPreconditionError(absl::StrCat(
          "device ", config.device, ": ",
          available == 0 ? std::string("this build or machine has no CUDA device")
                         : absl::StrCat("only ", available, " CUDA devices are visible"),
          "; pass --device cpu, or --device auto to take a GPU when there is one"));
    }
    placement->device = c10::Device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(index));
  }
  if (!placement->device.is_cuda()) core::keep_freed_memory_for_reuse();  // the model runs on the CPU
  const bool bf16 =
      config.dtype == "bfloat16" || (config.dtype == "auto" && placement->device.is_cuda());
  placement->dtype = bf16 ? c10::ScalarType::BFloat16 : c10::ScalarType::Float;
  return std::unique_ptr<ModelHost>(
      new ModelHost(config, std::move(observer), std::move(placement)));
}

ModelHost::ModelHost(const DaemonConfig& config,
                     std::shared_ptr<core::runtime::EngineObserver> observer,
                     std::unique_ptr<Placement> placement)
    : config_(config), observer_(std::move(observer)), placement_(std::move(placement)) {
  status_.device = placement_->device.str();
  status_.dtype = placement_->dtype == c10::ScalarType::BFloat16 ? "bfloat16" : "float32";
  status_.state = config_.model.empty() ? ModelState::kNone : ModelState::kLoading;
}

ModelHost::~ModelHost() { shutdown(); }

void ModelHost::start_loading(std::function<void(const ModelStatus&)> on_done) {
  if (config_.model.empty()) return;
  loader_ = std::thread([this, on_done = std::move(on_done)] { load(on_done); });
}

void ModelHost::load(const std::function<void(const ModelStatus&)>& on_done) {
  const auto start = std::chrono::steady_clock::now();
  const ModelStatus before = status();
  core::log_info("model loading",
                 {{"model", config_.model}, {"device", before.device}, {"dtype", before.dtype}});
  core::model::LoadOptions options;
  options.device = placement_->device;
  options.dtype = placement_->dtype;
  std::unique_ptr<Engine> engine;
  int64_t num_parameters = 0, bytes = 0;
  absl::Status loaded = core::guarded("loading the model", [&]() -> absl::Status {
    auto model = core::model::load_model(config_.model, options);
    if (!model.ok()) return model.status();
    num_parameters = (*model)->report.num_parameters;
    bytes = (*model)->report.bytes;
    engine = std::make_unique<Engine>(*std::move(model), engine_options(config_, observer_));
    return engine->start();
  });
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ModelStatus done;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (loaded.ok()) {
      engine_ = std::move(engine);
      status_.state = ModelState::kReady;
      status_.num_parameters = num_parameters;
      status_.bytes = bytes;
    } else {
      status_.state = ModelState::kFailed;
      status_.error = std::string(loaded.message());
    }
    done = status_;
  }
  if (loaded.ok()) {
    core::log_info("model ready", {{"model", config_.model},
                                   {"parameters", num_parameters},
                                   {"bytes", bytes},
                                   {"device", done.device},
                                   {"dtype", done.dtype},
                                   {"seconds", seconds}});
  } else {
    core::log_error("model failed to load; Ocr and Adapters answer FAILED_PRECONDITION",
                    {{"model", config_.model}, {"error", done.error}});
  }
  on_done(done);
}

absl::StatusOr<Engine*> ModelHost::engine() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (shut_down_) return absl::UnavailableError("cpmd is shutting down");
  switch (status_.state) {
    case ModelState::kNone:
      return absl::FailedPreconditionError("no model loaded; start cpmd with --model DIR");
    case ModelState::kLoading:
      return absl::UnavailableError(
          absl::StrCat("the model is still loading from ", config_.model,
                       "; retry when health reports this service SERVING"));
    case ModelState::kFailed:
      return absl::FailedPreconditionError(
          absl::StrCat("the model failed to load: ", status_.error));
    case ModelState::kReady:
      break;
  }
  return engine_.get();
}

ModelStatus ModelHost::status() const {
  std::lock_guard<std::mutex> lock(mu_);
  return status_;
}

std::optional<core::runtime::EngineStats> ModelHost::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (!engine_) return std::nullopt;
  return engine_->stats();
}

void ModelHost::shutdown() {
  std::lock_guard<std::mutex> once(shutdown_mu_);
  if (loader_.joinable()) loader_.join();
  Engine* engine = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shut_down_) return;
    shut_down_ = true;
    engine = engine_.get();
  }
  if (engine != nullptr) engine->stop(Engine::StopMode::kFailQueued);
}

}  // namespace cpm::server
