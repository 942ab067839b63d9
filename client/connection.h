// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <string>

namespace cpmctl {

// cpmctl's exit codes; scripts rely on them.
enum ExitCode : int {
  kExitOk = 0,
  kExitServerError = 1,  // the daemon answered with an error (or NOT_SERVING)
  kExitUsage = 2,        // bad flags or arguments
  kExitUnreachable = 3,  // no daemon answered at the address
};

// Options every command shares.
struct GlobalOptions {
  std::string server;  // HOST:PORT; empty: $CPM_SERVER, then 127.0.0.1:50051
  double timeout_seconds = 10;
  bool json = false;
};

// The daemon address after flag > environment > default.
std::string resolve_server(const GlobalOptions& options);

std::shared_ptr<grpc::Channel> make_channel(const std::string& server);

// A context whose deadline is the --timeout from now.
std::unique_ptr<grpc::ClientContext> make_context(const GlobalOptions& options);

// Prints one line for a failed call to stderr and returns the exit code: UNAVAILABLE (and a
// deadline hit before any answer) mean the daemon was not reached.
int report_error(const grpc::Status& status, const std::string& server, const std::string& what);

}  // namespace cpmctl
