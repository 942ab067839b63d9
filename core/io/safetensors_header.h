// SPDX-License-Identifier: Apache-2.0
//
// The safetensors format: an 8-byte little-endian header length N, N bytes of JSON
// ({"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}}),
// then the tensor bytes, offsets relative to the end of the header. This part needs no LibTorch,
// so the fuzzer and other tools can use it alone.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace cpm::core::io {

enum class DType { kF32, kF16, kBF16, kI64, kI32, kU8, kBool };

// "F32", "BF16", ... as spelled in safetensors headers.
const char* dtype_name(DType dtype);
size_t dtype_size(DType dtype);

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets in the data section
  uint64_t end = 0;
};

// The parsed header of one file. Validation: the length fits the file, the JSON is an object, every
// entry has a known dtype, a shape of non-negative dims, offsets inside the data section, a byte
// size equal to shape x dtype size, and no two entries overlap. Errors are INVALID_ARGUMENT naming
// `source` and the tensor.
struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;  // in data-offset order
  std::map<std::string, std::string> metadata;
  uint64_t data_offset = 0;  // 8 + header length: where the data section starts in the file
};
absl::StatusOr<SafetensorsHeader> parse_safetensors_header(const uint8_t* data, size_t size,
                                                           const std::string& source);

}  // namespace cpm::core::io
