// SPDX-License-Identifier: Apache-2.0
#include "common/guard.h"

#include <c10/util/Exception.h>

#include <stdexcept>
#include <string>

namespace cpm::core {
namespace {

std::string prefixed(std::string_view what, std::string_view message) {
  std::string out(what);
  if (!out.empty()) out += ": ";
  out += message;
  return out;
}

}  // namespace

absl::Status guarded(std::string_view what, const std::function<absl::Status()>& fn) {
  try {
    return fn();
  } catch (const c10::OutOfMemoryError& e) {  // before c10::Error, which it derives from
    return absl::ResourceExhaustedError(
        prefixed(what, std::string("device out of memory: ") + e.what_without_backtrace()));
  } catch (const c10::Error& e) {
    return absl::InternalError(prefixed(what, e.what_without_backtrace()));
  } catch (const std::invalid_argument& e) {
    return absl::InvalidArgumentError(prefixed(what, e.what()));
  } catch (const std::out_of_range& e) {
    return absl::OutOfRangeError(prefixed(what, e.what()));
  } catch (const std::exception& e) {
    return absl::InternalError(prefixed(what, e.what()));
  } catch (...) {
    return absl::InternalError(prefixed(what, "unknown exception"));
  }
}

}  // namespace cpm::core
