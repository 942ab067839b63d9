// SPDX-License-Identifier: Apache-2.0
#include "io/safetensors.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>

#include "absl/strings/str_cat.h"
#include "io/atomic_file.h"
#include "io/model_config.h"
#include "nlohmann/json.hpp"

namespace cpm::core::io {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr std::pair<DType, c10::ScalarType> kScalarTypes[] = {
    {DType::kF32, c10::ScalarType::Float}, {DType::kF16, c10::ScalarType::Half},
    {DType::kBF16, c10::ScalarType::BFloat16}, {DType::kI64, c10::ScalarType::Long},
    {DType::kI32, c10::ScalarType::Int},     {DType::kU8, c10::ScalarType::Byte},
    {DType::kBool, c10::ScalarType::Bool},
};

c10::ScalarType scalar_type(DType dtype) {
  for (const auto& [d, s] : kScalarTypes) {
    if (d == dtype) return s;
  }
  return c10::ScalarType::Float;
}

}  // namespace

// ---- SafetensorsFile ----

absl::StatusOr<std::shared_ptr<SafetensorsFile>> SafetensorsFile::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return errno == ENOENT
               ? absl::NotFoundError(absl::StrCat(path, ": no such file"))
               : absl::UnavailableError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->map_size_ = static_cast<size_t>(st.st_size);
  if (file->map_size_ > 0) {
    void* map = ::mmap(nullptr, file->map_size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return absl::UnavailableError(absl::StrCat(path, ": mmap failed: ", std::strerror(err)));
    }
    file->map_ = map;
  }
  ::close(fd);
  auto header =
      parse_safetensors_header(static_cast<const uint8_t*>(file->map_), file->map_size_, path);
  if (!header.ok()) return header.status();
  file->header_ = std::move(*header);
  for (size_t i = 0; i < file->header_.tensors.size(); ++i) {
    file->index_[file->header_.tensors[i].name] = i;
  }
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(map_, map_size_);
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

absl::StatusOr<at::Tensor> SafetensorsFile::tensor(const std::string& name) const {
  const TensorInfo* info = find(name);
  if (info == nullptr) return absl::NotFoundError(absl::StrCat(path_, ": no tensor '", name, "'"));
  const size_t element = dtype_size(info->dtype);
  const auto options = at::TensorOptions().dtype(scalar_type(info->dtype));
  uint8_t* bytes = static_cast<uint8_t*>(map_) + header_.data_offset + info->begin;
  if (info->end == info->begin) return at::empty(info->shape, options);
  if (reinterpret_cast<uintptr_t>(bytes) % element != 0) {
    // A header length that is not a multiple of 8 misaligns the data; kernels assume alignment.
    at::Tensor copy = at::empty(info->shape, options);
    std::memcpy(copy.data_ptr(), bytes, info->end - info->begin);
    return copy;
  }
  // The tensor keeps the mapping alive. PROT_READ: writing to it faults, so never write.
  std::shared_ptr<const SafetensorsFile> keep;
  try {
    keep = shared_from_this();
  } catch (const std::bad_weak_ptr&) {
    return absl::FailedPreconditionError("SafetensorsFile must be owned by a shared_ptr");
  }
  return at::from_blob(bytes, info->shape, [keep](void*) {}, options);
}

// ---- SafetensorsCheckpoint ----

absl::StatusOr<SafetensorsCheckpoint> SafetensorsCheckpoint::open(const std::string& path) {
  std::error_code ec;
  fs::path index_path;
  fs::path single;
  if (fs::is_directory(path, ec)) {
    if (fs::exists(fs::path(path) / "model.safetensors.index.json", ec)) {
      index_path = fs::path(path) / "model.safetensors.index.json";
    } else if (fs::exists(fs::path(path) / "model.safetensors", ec)) {
      single = fs::path(path) / "model.safetensors";
    } else {
      return absl::NotFoundError(absl::StrCat(
          path, ": no model.safetensors.index.json or model.safetensors in this directory"));
    }
  } else if (path.size() > 5 && path.substr(path.size() - 5) == ".json") {
    index_path = path;
  } else {
    single = path;
  }

  SafetensorsCheckpoint ckpt;
  if (!single.empty()) {
    auto file = SafetensorsFile::open(single.string());
    if (!file.ok()) return file.status();
    ckpt.files_.push_back(*file);
    for (const TensorInfo& t : (*file)->header().tensors) ckpt.where_[t.name] = 0;
    return ckpt;
  }

  auto text = read_file(index_path.string());
  if (!text.ok()) return text.status();
  json index;
  try {
    index = json::parse(*text);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(index_path.string(), ": not valid JSON: ", e.what()));
  }
  const auto map = index.find("weight_map");
  if (!index.is_object() || map == index.end() || !map->is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(index_path.string(), ": needs a \"weight_map\" object (tensor -> shard)"));
  }
  std::map<std::string, size_t> shard_index;
  for (const auto& [name, shard] : map->items()) {
    if (!shard.is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(index_path.string(), ": weight_map entry '", name, "' is not a string"));
    }
    const std::string shard_name = shard.get<std::string>();
    if (shard_name.empty() || shard_name.find('/') != std::string::npos || shard_name == "..") {
      return absl::InvalidArgumentError(absl::StrCat(
          index_path.string(), ": shard '", shard_name, "' must be a file name in the same folder"));
    }
    auto it = shard_index.find(shard_name);
    if (it == shard_index.end()) {
      const fs::path shard_path = index_path.parent_path() / shard_name;
      auto file = SafetensorsFile::open(shard_path.string());
      if (!file.ok()) {
        return absl::Status(file.status().code(),
                            absl::StrCat("checkpoint ", index_path.parent_path().string(),
                                         ": shard ", shard_name, " named by the index: ",
                                         file.status().message()));
      }
      it = shard_index.emplace(shard_name, ckpt.files_.size()).first;
      ckpt.files_.push_back(*file);
    }
    if (ckpt.files_[it->second]->find(name) == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("checkpoint ", index_path.parent_path().string(),
                                                     ": the index puts tensor '", name, "' in ",
                                                     shard_name, ", which does not hold it"));
    }
    ckpt.where_[name] = it->second;
  }
  return ckpt;
}

std::vector<std::string> SafetensorsCheckpoint::names() const {
  std::vector<std::string> out;
  out.reserve(where_.size());
  for (const auto& [name, file] : where_) out.push_back(name);
  return out;
}

const TensorInfo* SafetensorsCheckpoint::find(const std::string& name) const {
  const auto it = where_.find(name);
  return it == where_.end() ? nullptr : files_[it->second]->find(name);
}

const SafetensorsFile* SafetensorsCheckpoint::file_of(const std::string& name) const {
  const auto it = where_.find(name);
  return it == where_.end() ? nullptr : files_[it->second].get();
}

absl::StatusOr<at::Tensor> SafetensorsCheckpoint::tensor(const std::string& name) const {
  const auto it = where_.find(name);
  if (it == where_.end()) return absl::NotFoundError(absl::StrCat("no tensor '", name, "'"));
  return files_[it->second]->tensor(name);
}

// ---- writer ----

absl::Status write_safetensors(const std::string& path,
                               const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                               const std::map<std::string, std::string>& metadata) {
  std::vector<std::pair<std::string, at::Tensor>> sorted = tensors;
  std::sort(sorted.begin(), sorted.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (auto& [name, t] : sorted) {
    if (name.empty() || name == "__metadata__" || !seen.insert(name).second) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": bad or duplicate tensor name '", name, "'"));
    }
    const std::pair<DType, c10::ScalarType>* r = nullptr;
    for (const auto& entry : kScalarTypes) {
      if (entry.second == t.scalar_type()) r = &entry;
    }
    if (r == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", name, "' has dtype ",
                                                     c10::toString(t.scalar_type()),
                                                     ", which safetensors files here do not take"));
    }
    if (!t.device().is_cpu()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", name, "' is not on the CPU"));
    }
    t = t.contiguous();
    const uint64_t bytes = static_cast<uint64_t>(t.numel()) * dtype_size(r->first);
    header[name] = {{"dtype", dtype_name(r->first)},
                    {"shape", t.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  // Pad with spaces to a multiple of 8 so the data (and every tensor in it) stays aligned.
  text.append((8 - (8 + text.size()) % 8) % 8, ' ');

  uint8_t len[8];
  const uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
  std::vector<std::pair<const void*, size_t>> pieces{{len, 8}, {text.data(), text.size()}};
  for (const auto& [name, t] : sorted) {
    pieces.emplace_back(t.data_ptr(), static_cast<size_t>(t.numel()) * t.element_size());
  }
  return write_file_atomic(path, pieces);
}

}  // namespace cpm::core::io
