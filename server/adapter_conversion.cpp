// SPDX-License-Identifier: Apache-2.0
#include "adapter_conversion.h"

#include <google/protobuf/util/time_util.h>

#include "runtime/adapter_registry.h"

namespace cpm::server {
namespace {

using google::protobuf::util::TimeUtil;

// An unset time (the epoch) stays unset in the message.
template <typename Setter>
void set_time(std::chrono::system_clock::time_point t, Setter mutable_field) {
  if (t == std::chrono::system_clock::time_point{}) return;
  const auto nanos = std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch());
  *mutable_field() = TimeUtil::NanosecondsToTimestamp(nanos.count());
}

}  // namespace

cpm::v1::AdapterState to_proto(core::runtime::AdapterState state) {
  switch (state) {
    case core::runtime::AdapterState::kRegistered:
      return cpm::v1::ADAPTER_STATE_REGISTERED;
    case core::runtime::AdapterState::kLoading:
      return cpm::v1::ADAPTER_STATE_LOADING;
    case core::runtime::AdapterState::kLoaded:
      return cpm::v1::ADAPTER_STATE_LOADED;
    case core::runtime::AdapterState::kFailed:
      return cpm::v1::ADAPTER_STATE_FAILED;
  }
  return cpm::v1::ADAPTER_STATE_UNSPECIFIED;
}

void to_proto(const core::runtime::AdapterInfo& info, cpm::v1::Adapter* out) {
  out->set_name(info.name);
  out->set_path(info.path);
  out->set_state(to_proto(info.state));
  out->set_r(static_cast<int32_t>(info.r));
  out->set_lora_alpha(info.lora_alpha);
  out->set_use_rslora(info.use_rslora);
  for (const std::string& m : info.target_modules) out->add_target_modules(m);
  for (const std::string& m : info.modules_to_save) out->add_modules_to_save(m);
  out->set_base_model_name_or_path(info.base_model_name_or_path);
  out->set_size_bytes(info.size_bytes);
  out->set_device_bytes(info.device_bytes);
  out->set_pinned(info.pinned);
  set_time(info.register_time, [out] { return out->mutable_register_time(); });
  set_time(info.load_time, [out] { return out->mutable_load_time(); });
  if (info.load_duration.count() > 0) {
    *out->mutable_load_duration() = TimeUtil::NanosecondsToDuration(info.load_duration.count());
  }
  set_time(info.last_used_time, [out] { return out->mutable_last_used_time(); });
  out->set_requests_served(info.requests_served);
  out->set_error(info.error);
}

}  // namespace cpm::server
