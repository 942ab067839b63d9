// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <grpcpp/grpcpp.h>

#include <cstdio>
#include <memory>
#include <string>

#include "settings.h"

namespace cpmctl {

// cpmctl's exit codes; scripts rely on them.
enum ExitCode : int {
  kExitOk = 0,
  kExitServerError = 1,  // the daemon answered with an error (or NOT_SERVING); a dataset has problems
  kExitUsage = 2,        // bad flags, arguments or local files
  kExitUnreachable = 3,  // no daemon answered at the address
  kExitInterrupted = 130,  // Ctrl-C (the shell's 128 + SIGINT)
};

// A channel to options.server: TLS with options.tls_ca as the root certificates when it is set
// (presenting options.tls_cert / tls_key when given), else plaintext. Null, with a line in
// `error`, when a certificate or key file cannot be read.
std::shared_ptr<grpc::Channel> make_channel(const GlobalOptions& options, std::string* error);

// A context for a unary call: its deadline is --timeout from now, and it carries the bearer token.
std::unique_ptr<grpc::ClientContext> make_context(const GlobalOptions& options);
// The same without a deadline, for streams that last as long as a job or an upload.
std::unique_ptr<grpc::ClientContext> make_stream_context(const GlobalOptions& options);

// Prints one line for a failed call to stderr and returns the exit code: UNAVAILABLE (and a
// deadline hit before any answer) mean the daemon was not reached.
int report_error(const grpc::Status& status, const std::string& server, const std::string& what);

// A stub of `Service` on a fresh channel, or null after printing why (exit kExitUsage).
template <typename Service>
std::unique_ptr<typename Service::Stub> make_stub(const GlobalOptions& options) {
  std::string error;
  auto channel = make_channel(options, &error);
  if (!channel) {
    std::fprintf(stderr, "cpmctl: %s\n", error.c_str());
    return nullptr;
  }
  return Service::NewStub(channel);
}

}  // namespace cpmctl
