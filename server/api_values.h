// SPDX-License-Identifier: Apache-2.0
//
// Small values the cpm.v1 services make the same way: ids, pages, timestamps.
#pragma once

#include <google/protobuf/timestamp.pb.h>

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "cpm/v1/common.pb.h"
#include "job_store.h"

namespace cpm::server {

// `prefix` + 12 random lower-case hex digits (48 bits: no collision in any daemon's lifetime of
// jobs or uploads; the store's primary key would refuse one anyway). Thread-safe.
std::string random_id(const std::string& prefix);

// A page of a newest-first listing. page_token names where the previous page stopped (its last
// item's position in the store), so items created between two requests neither repeat nor shift
// the next page. Size 0 means 50; at most 1000. INVALID_ARGUMENT for a token this server did not
// write.
struct Page {
  std::optional<JobStore::ListPosition> after;
  int size = 50;
};
// The token of the page after `next` ("" when there is none).
std::string page_token(const std::optional<JobStore::ListPosition>& next);
absl::StatusOr<Page> parse_page(const cpm::v1::PageRequest& request);

void set_now(google::protobuf::Timestamp* t);

}  // namespace cpm::server
