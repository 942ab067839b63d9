// SPDX-License-Identifier: Apache-2.0
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Returns from the enclosing function when `expr` (an absl::Status) is not OK.
#define CPM_RETURN_IF_ERROR(expr)              \
  do {                                         \
    ::absl::Status cpm_status_ = (expr);       \
    if (!cpm_status_.ok()) return cpm_status_; \
  } while (false)

#define CPM_STATUS_CONCAT_INNER_(a, b) a##b
#define CPM_STATUS_CONCAT_(a, b) CPM_STATUS_CONCAT_INNER_(a, b)

// `CPM_ASSIGN_OR_RETURN(auto x, f());` declares x from the StatusOr's value, or returns its error.
#define CPM_ASSIGN_OR_RETURN(lhs, expr) \
  CPM_ASSIGN_OR_RETURN_IMPL_(CPM_STATUS_CONCAT_(cpm_statusor_, __LINE__), lhs, expr)
#define CPM_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                               \
  if (!tmp.ok()) return std::move(tmp).status();   \
  lhs = std::move(tmp).value()
