// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <google/protobuf/message.h>

#include <cstdint>
#include <string>

#include "cpm/v1/admin.pb.h"

namespace cpmctl {

// A message as indented JSON with proto field names, for --json.
std::string to_json(const google::protobuf::Message& message);
// The same on one line (no trailing newline), for streams of messages (JSON Lines).
std::string to_json_line(const google::protobuf::Message& message);

// "1.5 GiB", "312 MiB", "0 B".
std::string human_bytes(int64_t bytes);
// "3d 4h", "2h 5m", "4m 12s", "9s".
std::string human_duration(int64_t seconds);

// The readable `cpmctl info` report.
std::string format_info(const cpm::v1::ServerInfo& info);

}  // namespace cpmctl
