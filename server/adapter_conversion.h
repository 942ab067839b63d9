// SPDX-License-Identifier: Apache-2.0
//
// The engine's AdapterInfo (core/runtime/adapter_registry.h) -> cpm.v1.Adapter.
#pragma once

#include "cpm/v1/adapters.pb.h"

namespace cpm::core::runtime {
struct AdapterInfo;
enum class AdapterState;
}  // namespace cpm::core::runtime

namespace cpm::server {

cpm::v1::AdapterState to_proto(core::runtime::AdapterState state);
void to_proto(const core::runtime::AdapterInfo& info, cpm::v1::Adapter* out);

}  // namespace cpm::server
