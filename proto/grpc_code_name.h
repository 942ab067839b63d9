// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <grpcpp/support/status.h>

namespace cpm {

// The canonical name of a status code ("OK", "INVALID_ARGUMENT", ...): the grpc_code label of the
// daemon's metrics, and how cpmctl reports errors.
const char* grpc_code_name(grpc::StatusCode code);

}  // namespace cpm
