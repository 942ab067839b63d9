// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <condition_variable>
#include <functional>
#include <future>
#include <memory>
#include <mutex>

#include "absl/base/thread_annotations.h"

namespace cpm::server {

// Runs a continuation once a std::future is ready, on a thread of its own, so that no gRPC
// reaction blocks on the engine's futures (an adapter load takes seconds, an unload waits for
// the running batch). One thread per wait: these are rare admin calls. Thread-safe; destruction
// waits for every continuation to return.
class FutureWaiter {
 public:
  FutureWaiter() = default;
  ~FutureWaiter();
  FutureWaiter(const FutureWaiter&) = delete;
  FutureWaiter& operator=(const FutureWaiter&) = delete;

  template <typename T>
  void then(std::future<T> future, std::function<void(T)> done) {
    auto shared = std::make_shared<std::future<T>>(std::move(future));
    run([shared, done = std::move(done)] { done(shared->get()); });
  }

 private:
  void run(std::function<void()> task);

  std::mutex mu_;
  std::condition_variable idle_;
  int active_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace cpm::server
