// SPDX-License-Identifier: Apache-2.0
//
// A plain HTTP/1.0 GET, enough to read cpmd's /metrics (which is served without TLS).
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace cpmctl {

// "host:port" or "[v6]:port" -> host and port; INVALID_ARGUMENT otherwise.
absl::Status split_host_port(const std::string& address, std::string* host, std::string* port);

// The body of http://address/path. `bearer` (when set) goes into an Authorization header.
// UNAVAILABLE when nothing answers in `timeout_seconds`; INTERNAL for a non-200 answer, with
// its status line.
absl::StatusOr<std::string> http_get(const std::string& address, const std::string& path,
                                     const std::string& bearer, double timeout_seconds);

}  // namespace cpmctl
