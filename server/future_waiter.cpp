// SPDX-License-Identifier: Apache-2.0
#include "future_waiter.h"

#include <thread>

namespace cpm::server {

FutureWaiter::~FutureWaiter() {
  std::unique_lock<std::mutex> lock(mu_);
  idle_.wait(lock, [this] { return active_ == 0; });
}

void FutureWaiter::run(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++active_;
  }
  std::thread([this, task = std::move(task)] {
    task();
    // Notified under the lock: the destructor cannot return (and free mu_) before this unlocks.
    std::lock_guard<std::mutex> lock(mu_);
    --active_;
    idle_.notify_all();
  }).detach();
}

}  // namespace cpm::server
