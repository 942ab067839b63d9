// SPDX-License-Identifier: Apache-2.0
//
// Safetensors checkpoints as LibTorch tensors: memory-mapped reading (one file or sharded), and
// atomic writing. The header format itself is in safetensors_header.h.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "io/safetensors_header.h"

namespace cpm::core::io {

// One memory-mapped safetensors file. Tensors returned by tensor() alias the mapping (zero copy,
// read-only in spirit: never write to them) and keep it alive. Thread-safe after open().
class SafetensorsFile : public std::enable_shared_from_this<SafetensorsFile> {
 public:
  static absl::StatusOr<std::shared_ptr<SafetensorsFile>> open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const SafetensorsHeader& header() const { return header_; }
  const TensorInfo* find(const std::string& name) const;
  // A CPU tensor over the mapped bytes. NOT_FOUND for an unknown name.
  absl::StatusOr<at::Tensor> tensor(const std::string& name) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  SafetensorsHeader header_;
  std::map<std::string, size_t> index_;  // name -> position in header_.tensors
  void* map_ = nullptr;
  size_t map_size_ = 0;
};

// A checkpoint: one `model.safetensors`, or the shards named by `model.safetensors.index.json`
// (its `weight_map`). A missing or malformed shard is an error naming it.
class SafetensorsCheckpoint {
 public:
  // `path` is a checkpoint directory, a .safetensors file, or an index .json file.
  static absl::StatusOr<SafetensorsCheckpoint> open(const std::string& path);

  // Every tensor name, sorted.
  std::vector<std::string> names() const;
  const TensorInfo* find(const std::string& name) const;
  absl::StatusOr<at::Tensor> tensor(const std::string& name) const;
  // The file that holds `name`.
  const SafetensorsFile* file_of(const std::string& name) const;

 private:
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, size_t> where_;  // name -> index into files_
};

// Writes `tensors` (contiguous CPU tensors of the supported dtypes; names sorted in the file) to
// `path` atomically: a temporary file in the same folder, fsync, then rename.
absl::Status write_safetensors(const std::string& path,
                               const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                               const std::map<std::string, std::string>& metadata = {});

}  // namespace cpm::core::io
