// SPDX-License-Identifier: Apache-2.0
//
// SHA-256 (FIPS 180-4) for the checksums in cpm.v1.FileInfo. Written out here rather than taken
// from OpenSSL, whose development headers the offline GPU hosts do not have.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace cpm::core {

// Incremental hashing: update() any number of times, then hex_digest() once. Not thread-safe.
class Sha256 {
 public:
  Sha256();
  void update(std::string_view data);
  // Lower-case hex of the digest. Ends the computation: call nothing else afterwards.
  std::string hex_digest();

 private:
  void compress(const uint8_t* block);

  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> block_{};
  size_t block_used_ = 0;
  uint64_t total_bytes_ = 0;
};

// The hex digest of a whole file, read in chunks. NOT_FOUND / INTERNAL naming the file.
absl::StatusOr<std::string> sha256_file(const std::string& path);

}  // namespace cpm::core
