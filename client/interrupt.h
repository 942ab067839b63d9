// SPDX-License-Identifier: Apache-2.0
//
// Ctrl-C as "stop this call", not "kill cpmctl": while a CancelOnInterrupt lives, SIGINT cancels
// its gRPC call, and the code after the call can say what happened (for a watch: the job keeps
// running, and how to re-attach). One at a time.
#pragma once

#include <grpcpp/client_context.h>

#include <atomic>
#include <csignal>
#include <thread>

namespace cpmctl {

class CancelOnInterrupt {
 public:
  explicit CancelOnInterrupt(grpc::ClientContext* context);
  ~CancelOnInterrupt();  // restores the previous SIGINT disposition
  CancelOnInterrupt(const CancelOnInterrupt&) = delete;
  CancelOnInterrupt& operator=(const CancelOnInterrupt&) = delete;

  // Whether Ctrl-C was pressed (and the call cancelled).
  bool interrupted() const;

 private:
  struct sigaction previous_ {};
  std::atomic<bool> stop_{false};
  std::thread canceller_;  // the handler only sets a flag; this thread cancels the call
};

}  // namespace cpmctl
