// SPDX-License-Identifier: Apache-2.0
#include "connection.h"

#include <cstdio>
#include <cstdlib>

#include "grpc_code_name.h"

namespace cpmctl {

std::string resolve_server(const GlobalOptions& options) {
  if (!options.server.empty()) return options.server;
  if (const char* env = std::getenv("CPM_SERVER"); env != nullptr && *env != '\0') return env;
  return "127.0.0.1:50051";
}

std::shared_ptr<grpc::Channel> make_channel(const std::string& server) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(256 << 20);
  return grpc::CreateCustomChannel(server, grpc::InsecureChannelCredentials(), args);
}

std::unique_ptr<grpc::ClientContext> make_context(const GlobalOptions& options) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::milliseconds(static_cast<int64_t>(options.timeout_seconds * 1000)));
  return context;
}

int report_error(const grpc::Status& status, const std::string& server, const std::string& what) {
  const grpc::StatusCode code = status.error_code();
  if (code == grpc::StatusCode::UNAVAILABLE || code == grpc::StatusCode::DEADLINE_EXCEEDED) {
    std::fprintf(stderr,
                 "cpmctl: cannot reach cpmd at %s (%s: %s); is it running? Set --server or "
                 "CPM_SERVER to its HOST:PORT\n",
                 server.c_str(), cpm::grpc_code_name(code), status.error_message().c_str());
    return kExitUnreachable;
  }
  std::fprintf(stderr, "cpmctl: %s failed: %s: %s\n", what.c_str(), cpm::grpc_code_name(code),
               status.error_message().c_str());
  return kExitServerError;
}

}  // namespace cpmctl
