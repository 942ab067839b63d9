// SPDX-License-Identifier: Apache-2.0
//
// A cancellation flag shared by a caller and the engine: the caller (a gRPC handler whose client
// went away) cancels, the engine stops caring about the request. Cancelling a request that is still
// queued completes it with CANCELLED at once, on the cancelling thread, and frees its queue slot.
#pragma once

#include <atomic>
#include <functional>
#include <mutex>

#include "absl/base/thread_annotations.h"

namespace cpm::core::runtime {

// Thread-safe. Once cancelled, stays cancelled.
class CancellationToken {
 public:
  // Sets the flag and runs the hook (if any) once, on this thread. Idempotent.
  void cancel();
  bool cancelled() const { return cancelled_.load(std::memory_order_acquire); }

  // Engine side: `hook` runs once when cancel() is called, or at once (on this thread) when the
  // token is already cancelled. Replaces an earlier hook that has not run. The hook must not
  // assume its owner is alive (the engine's holds a weak reference).
  void on_cancel(std::function<void()> hook);

 private:
  std::atomic<bool> cancelled_{false};
  std::mutex mu_;
  std::function<void()> hook_ ABSL_GUARDED_BY(mu_);
};

}  // namespace cpm::core::runtime
