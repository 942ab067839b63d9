// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace cpm::server {

// The only place a grpc::Status is made from a core status. absl and gRPC share code numbers;
// messages are cut at 1024 bytes so a runaway error cannot blow up a response.
grpc::Status to_grpc_status(const absl::Status& status);

}  // namespace cpm::server
