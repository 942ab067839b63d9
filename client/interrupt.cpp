// SPDX-License-Identifier: Apache-2.0
#include "interrupt.h"

#include <chrono>

namespace cpmctl {
namespace {

// Lock-free, so the signal handler may set it.
std::atomic<bool> g_interrupted{false};
static_assert(std::atomic<bool>::is_always_lock_free);

void on_sigint(int) { g_interrupted.store(true); }

}  // namespace

CancelOnInterrupt::CancelOnInterrupt(grpc::ClientContext* context) {
  g_interrupted.store(false);
  struct sigaction action {};
  action.sa_handler = on_sigint;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, &previous_);
  canceller_ = std::thread([this, context] {
    while (!stop_.load()) {
      if (g_interrupted.load()) {
        context->TryCancel();
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
}

CancelOnInterrupt::~CancelOnInterrupt() {
  stop_.store(true);
  canceller_.join();
  sigaction(SIGINT, &previous_, nullptr);
}

bool CancelOnInterrupt::interrupted() const { return g_interrupted.load(); }

}  // namespace cpmctl
