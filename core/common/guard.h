// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <functional>
#include <string_view>

#include "absl/status/status.h"

namespace cpm::core {

// The exception -> Status boundary of core. Runs `fn` and maps what it throws:
//   c10::OutOfMemoryError  -> RESOURCE_EXHAUSTED (device out of memory)
//   std::invalid_argument  -> INVALID_ARGUMENT
//   std::out_of_range      -> OUT_OF_RANGE
//   c10::Error, other std::exception, anything else -> INTERNAL
// The message starts with `what` ("loading adapter x: ..."). LibTorch reports bugs and shape errors
// by throwing; public core calls that the server makes go through here so nothing escapes.
absl::Status guarded(std::string_view what, const std::function<absl::Status()>& fn);

}  // namespace cpm::core
