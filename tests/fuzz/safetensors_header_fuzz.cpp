// SPDX-License-Identifier: Apache-2.0
//
// libFuzzer: any bytes as a safetensors file. The header parser must answer with a header or an
// INVALID_ARGUMENT, never crash, hang or read outside the buffer (ASan + UBSan watch).
#include <cstddef>
#include <cstdint>

#include "io/safetensors_header.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto header = cpm::core::io::parse_safetensors_header(data, size, "fuzz");
  if (header.ok()) {
    // A header that parses describes a data section that fits the buffer exactly.
    uint64_t covered = 0;
    for (const auto& t : header->tensors) covered += t.end - t.begin;
    if (header->data_offset + covered != size) __builtin_trap();
  } else if (header.status().code() != absl::StatusCode::kInvalidArgument) {
    __builtin_trap();
  }
  return 0;
}
