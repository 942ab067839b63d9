// SPDX-License-Identifier: Apache-2.0
//
// Small values the cpm.v1 services make the same way: ids, offset pages, timestamps.
#pragma once

#include <google/protobuf/timestamp.pb.h>

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "cpm/v1/common.pb.h"

namespace cpm::server {

// `prefix` + 12 random lower-case hex digits (48 bits: no collision in any daemon's lifetime of
// jobs or uploads; the store's primary key would refuse one anyway). Thread-safe.
std::string random_id(const std::string& prefix);

// An offset page: page_token is the offset a previous response handed out. Size 0 means 50; at
// most 1000. INVALID_ARGUMENT for a token this server did not write.
struct Page {
  int64_t offset = 0;
  int size = 50;
  // The token of the next page, or "" when `total` items end within this one.
  std::string next_token(int64_t total) const;
};
absl::StatusOr<Page> parse_page(const cpm::v1::PageRequest& request);

void set_now(google::protobuf::Timestamp* t);

}  // namespace cpm::server
