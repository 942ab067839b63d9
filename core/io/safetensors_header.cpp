// SPDX-License-Identifier: Apache-2.0
#include "io/safetensors_header.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace cpm::core::io {
namespace {

using nlohmann::json;

// Headers beyond this are malformed (the reference library's own limit is 100 MB).
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

struct DTypeRow {
  DType dtype;
  const char* name;
  size_t size;
};
constexpr DTypeRow kDTypes[] = {
    {DType::kF32, "F32", 4},  {DType::kF16, "F16", 2}, {DType::kBF16, "BF16", 2},
    {DType::kI64, "I64", 8},  {DType::kI32, "I32", 4}, {DType::kU8, "U8", 1},
    {DType::kBool, "BOOL", 1},
};

const DTypeRow& row(DType dtype) {
  for (const DTypeRow& r : kDTypes) {
    if (r.dtype == dtype) return r;
  }
  return kDTypes[0];
}

absl::Status bad(const std::string& source, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": malformed safetensors: ", what));
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

absl::Status parse_entry(const std::string& source, const std::string& name, const json& entry,
                         uint64_t data_size, TensorInfo& out) {
  const std::string where = absl::StrCat("tensor '", name, "'");
  if (!entry.is_object()) return bad(source, where + " is not an object");
  const auto dtype = entry.find("dtype");
  if (dtype == entry.end() || !dtype->is_string()) return bad(source, where + " has no dtype");
  const std::string dtype_text = dtype->get<std::string>();
  const DTypeRow* found = nullptr;
  for (const DTypeRow& r : kDTypes) {
    if (dtype_text == r.name) found = &r;
  }
  if (found == nullptr) {
    return bad(source, absl::StrCat(where, " has unsupported dtype '", dtype_text,
                                    "' (supported: F32, F16, BF16, I64, I32, U8, BOOL)"));
  }
  out.name = name;
  out.dtype = found->dtype;
  const auto shape = entry.find("shape");
  if (shape == entry.end() || !shape->is_array()) return bad(source, where + " has no shape");
  uint64_t numel = 1;
  bool overflow = false;
  for (const json& d : *shape) {
    if (!d.is_number_integer() || d.get<int64_t>() < 0) {
      return bad(source, where + " has a shape entry that is not a non-negative integer");
    }
    const uint64_t dim = d.get<uint64_t>();
    if (dim != 0 && numel > std::numeric_limits<uint64_t>::max() / dim) overflow = true;
    numel *= dim;
    out.shape.push_back(static_cast<int64_t>(dim));
  }
  const auto offsets = entry.find("data_offsets");
  if (offsets == entry.end() || !offsets->is_array() || offsets->size() != 2 ||
      !(*offsets)[0].is_number_unsigned() || !(*offsets)[1].is_number_unsigned()) {
    return bad(source, where + " needs data_offsets [begin, end] of non-negative integers");
  }
  out.begin = (*offsets)[0].get<uint64_t>();
  out.end = (*offsets)[1].get<uint64_t>();
  if (out.begin > out.end || out.end > data_size) {
    return bad(source, absl::StrCat(where, " has data_offsets [", out.begin, ", ", out.end,
                                    "] outside the data section of ", data_size, " bytes"));
  }
  if (overflow || numel > std::numeric_limits<uint64_t>::max() / found->size ||
      numel * found->size != out.end - out.begin) {
    return bad(source, absl::StrCat(where, " spans ", out.end - out.begin, " bytes but its shape ",
                                    shape->dump(), " of ", found->name, " needs ",
                                    overflow ? "more than 2^64" : std::to_string(numel * found->size)));
  }
  return absl::OkStatus();
}

}  // namespace

const char* dtype_name(DType dtype) { return row(dtype).name; }
size_t dtype_size(DType dtype) { return row(dtype).size; }

absl::StatusOr<SafetensorsHeader> parse_safetensors_header(const uint8_t* data, size_t size,
                                                           const std::string& source) {
  if (size < 8) return bad(source, absl::StrCat("file of ", size, " bytes has no header length"));
  const uint64_t n = read_u64_le(data);
  if (n > kMaxHeaderBytes) {
    return bad(source, absl::StrCat("header length ", n, " exceeds the 100 MB limit"));
  }
  if (n > size - 8) {
    return bad(source, absl::StrCat("header length ", n, " runs past the end of the ", size,
                                    "-byte file (truncated?)"));
  }
  json doc;
  try {
    doc = json::parse(data + 8, data + 8 + n);
  } catch (const json::exception& e) {
    return bad(source, absl::StrCat("header is not valid JSON: ", e.what()));
  }
  if (!doc.is_object()) return bad(source, "header is not a JSON object");
  SafetensorsHeader header;
  header.data_offset = 8 + n;
  const uint64_t data_size = size - header.data_offset;
  for (const auto& [key, value] : doc.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) return bad(source, "__metadata__ is not an object");
      for (const auto& [mk, mv] : value.items()) {
        if (!mv.is_string()) return bad(source, absl::StrCat("__metadata__ '", mk, "' is not a string"));
        header.metadata[mk] = mv.get<std::string>();
      }
      continue;
    }
    TensorInfo info;
    if (auto s = parse_entry(source, key, value, data_size, info); !s.ok()) return s;
    header.tensors.push_back(std::move(info));
  }
  // The data section must be covered exactly: sorted by offset, each tensor starts where the
  // previous one ended (no overlap, no gap), and the last one ends at the end of the file.
  std::sort(header.tensors.begin(), header.tensors.end(),
            [](const TensorInfo& a, const TensorInfo& b) {
              return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
            });
  uint64_t expected = 0;
  for (const TensorInfo& t : header.tensors) {
    if (t.begin < expected) {
      return bad(source, absl::StrCat("tensor '", t.name, "' at [", t.begin, ", ", t.end,
                                      ") overlaps the previous tensor, which ends at ", expected));
    }
    if (t.begin > expected) {
      return bad(source, absl::StrCat("gap of ", t.begin - expected, " bytes before tensor '",
                                      t.name, "'"));
    }
    expected = t.end;
  }
  if (expected != data_size) {
    return bad(source, absl::StrCat("tensors cover ", expected, " bytes of a ", data_size,
                                    "-byte data section (truncated or padded file?)"));
  }
  return header;
}

}  // namespace cpm::core::io
