// SPDX-License-Identifier: Apache-2.0
//
// The model's life in the daemon: cpmd listens at once and loads the checkpoint on a thread of its
// own (a real checkpoint takes minutes), then hands it to the runtime::Engine that serves it. The
// services ask the host for the engine and get a status that tells the client why there is none.
//
//   no --model: kNone      --model: kLoading --ok--> kReady --shutdown()--> engine stopped
//                                           \--error--> kFailed (the daemon keeps serving the rest)
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "config.h"

namespace cpm::core::runtime {
class Engine;
class EngineObserver;
struct EngineStats;
}  // namespace cpm::core::runtime

namespace cpm::server {

enum class ModelState { kNone, kLoading, kReady, kFailed };

// What Admin.GetInfo reports about the weights.
struct ModelStatus {
  ModelState state = ModelState::kNone;
  std::string error;           // kFailed: why
  std::string device;          // "cuda:0", "cpu"
  std::string dtype;           // "bfloat16", "float32"
  int64_t num_parameters = 0;  // kReady
  int64_t bytes = 0;           // kReady: weights on the device
};

// Thread-safe.
class ModelHost {
 public:
  // Resolves the configured device and dtype ("auto" included). FAILED_PRECONDITION when CUDA is
  // asked for and this build or machine has no such device. Loads nothing yet.
  static absl::StatusOr<std::unique_ptr<ModelHost>> create(
      const DaemonConfig& config, std::shared_ptr<core::runtime::EngineObserver> observer);
  // shutdown().
  ~ModelHost();
  ModelHost(const ModelHost&) = delete;
  ModelHost& operator=(const ModelHost&) = delete;

  // Without a model: nothing. Else loads on a thread, then calls `on_done` there with the final
  // status (kReady or kFailed). Call once.
  void start_loading(std::function<void(const ModelStatus&)> on_done);

  // The serving engine; the pointer stays valid as long as the host (after shutdown() the engine
  // refuses work with UNAVAILABLE). Otherwise FAILED_PRECONDITION (no model, or it
  // failed to load: the message says which and what to do) or UNAVAILABLE (still loading, or
  // shutting down).
  absl::StatusOr<core::runtime::Engine*> engine() const;
  ModelStatus status() const;
  // The engine's counters, once it runs.
  std::optional<core::runtime::EngineStats> stats() const;

  // Waits for a load in progress to end, then stops the engine: requests still queued fail with
  // UNAVAILABLE. Only once no gRPC call can reach the engine any more. Idempotent.
  void shutdown();

 private:
  struct Placement;
  ModelHost(const DaemonConfig& config, std::shared_ptr<core::runtime::EngineObserver> observer,
            std::unique_ptr<Placement> placement);
  void load(const std::function<void(const ModelStatus&)>& on_done);

  const DaemonConfig config_;
  const std::shared_ptr<core::runtime::EngineObserver> observer_;
  const std::unique_ptr<Placement> placement_;
  mutable std::mutex mu_;
  ModelStatus status_ ABSL_GUARDED_BY(mu_);
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  // Set once when loading succeeds; stopped (not destroyed) by shutdown(), so a pointer handed out
  // by engine() never dangles.
  std::unique_ptr<core::runtime::Engine> engine_ ABSL_GUARDED_BY(mu_);
  std::mutex shutdown_mu_;  // one shutdown() at a time
  std::thread loader_;
};

}  // namespace cpm::server
