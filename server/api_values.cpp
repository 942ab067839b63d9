// SPDX-License-Identifier: Apache-2.0
#include "api_values.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <random>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace cpm::server {

std::string random_id(const std::string& prefix) {
  static std::mutex mu;
  static std::mt19937_64 rng{std::random_device{}()};
  uint64_t bits;
  {
    std::lock_guard<std::mutex> lock(mu);
    bits = rng() & 0xffffffffffffULL;
  }
  char hex[13];
  std::snprintf(hex, sizeof hex, "%012llx", static_cast<unsigned long long>(bits));
  return prefix + hex;
}

std::string page_token(const std::optional<JobStore::ListPosition>& next) {
  return next ? absl::StrCat(next->create_time, ".", next->rowid) : std::string();
}

absl::StatusOr<Page> parse_page(const cpm::v1::PageRequest& request) {
  Page page;
  const std::string& token = request.page_token();
  if (!token.empty()) {
    const std::vector<std::string> parts = absl::StrSplit(token, '.');
    JobStore::ListPosition at;
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &at.create_time) || !absl::SimpleAtoi(parts[1], &at.rowid) ||
        at.rowid <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("page_token \"", token, "\" is not one this server returned; start without it"));
    }
    page.after = at;
  }
  if (request.page_size() > 0) page.size = std::min(request.page_size(), 1000);
  return page;
}

void set_now(google::protobuf::Timestamp* t) {
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();
  t->set_seconds(us / 1000000);
  t->set_nanos(static_cast<int32_t>(us % 1000000) * 1000);
}

}  // namespace cpm::server
