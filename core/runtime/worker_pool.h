// SPDX-License-Identifier: Apache-2.0
//
// A few CPU threads for the work around the engine that needs no model tensor: decoding and
// slicing images, tokenizing prompts, reading adapter files.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"

namespace cpm::core::runtime {

// Thread-safe. Tasks run in submission order on one of `threads` threads; a task must not throw.
class WorkerPool {
 public:
  explicit WorkerPool(int threads);
  // Runs every task already posted, then joins.
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  void post(std::function<void()> task);

 private:
  void run();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace cpm::core::runtime
