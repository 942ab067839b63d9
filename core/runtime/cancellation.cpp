// SPDX-License-Identifier: Apache-2.0
#include "runtime/cancellation.h"

#include <utility>

namespace cpm::core::runtime {

void CancellationToken::cancel() {
  std::function<void()> hook;
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_.store(true, std::memory_order_release);
    hook = std::move(hook_);
    hook_ = nullptr;
  }
  // Outside the lock: the hook takes the engine's lock, and the engine never holds its own lock
  // while calling into a token.
  if (hook) hook();
}

void CancellationToken::on_cancel(std::function<void()> hook) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!cancelled_.load(std::memory_order_acquire)) {
      hook_ = std::move(hook);
      return;
    }
  }
  if (hook) hook();
}

}  // namespace cpm::core::runtime
