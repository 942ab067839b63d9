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
#include "io/model_config.h"
#include "nlohmann/json.hpp"

namespace cpm::core::io {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Headers beyond this are malformed (the reference library's own limit is 100 MB).
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

struct DTypeRow {
  DType dtype;
  const char* name;
  size_t size;
  c10::ScalarType scalar;
};
constexpr DTypeRow kDTypes[] = {
    {DType::kF32, "F32", 4, c10::ScalarType::Float},
    {DType::kF16, "F16", 2, c10::ScalarType::Half},
    {DType::kBF16, "BF16", 2, c10::ScalarType::BFloat16},
    {DType::kI64, "I64", 8, c10::ScalarType::Long},
    {DType::kI32, "I32", 4, c10::ScalarType::Int},
    {DType::kU8, "U8", 1, c10::ScalarType::Byte},
    {DType::kBool, "BOOL", 1, c10::ScalarType::Bool},
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
  const DTypeRow& r = row(info->dtype);
  const auto options = at::TensorOptions().dtype(r.scalar);
  uint8_t* bytes = static_cast<uint8_t*>(map_) + header_.data_offset + info->begin;
  if (info->end == info->begin) return at::empty(info->shape, options);
  if (reinterpret_cast<uintptr_t>(bytes) % r.size != 0) {
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
    const DTypeRow* r = nullptr;
    for (const DTypeRow& d : kDTypes) {
      if (d.scalar == t.scalar_type()) r = &d;
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
    const uint64_t bytes = static_cast<uint64_t>(t.numel()) * r->size;
    header[name] = {{"dtype", r->name}, {"shape", t.sizes().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  // Pad with spaces to a multiple of 8 so the data (and every tensor in it) stays aligned.
  text.append((8 - (8 + text.size()) % 8) % 8, ' ');

  const fs::path target(path);
  const fs::path tmp = target.parent_path() /
                       absl::StrCat(".", target.filename().string(), ".tmp.", ::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat(path, ": cannot create ", tmp.string(), ": ",
                                               std::strerror(errno)));
  }
  auto write_all = [fd](const void* p, size_t n) {
    const char* c = static_cast<const char*>(p);
    while (n > 0) {
      const ssize_t w = ::write(fd, c, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return false;
      c += w;
      n -= static_cast<size_t>(w);
    }
    return true;
  };
  uint8_t len[8];
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
  bool ok = write_all(len, 8) && write_all(text.data(), text.size());
  for (const auto& [name, t] : sorted) {
    if (!ok) break;
    ok = write_all(t.data_ptr(), static_cast<size_t>(t.numel()) * t.element_size());
  }
  ok = ok && ::fsync(fd) == 0;
  const int err = errno;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), target.c_str()) != 0) {
    const int e = ok ? errno : err;
    ::unlink(tmp.c_str());
    return absl::UnavailableError(absl::StrCat(path, ": write failed: ", std::strerror(e)));
  }
  // Make the rename itself durable.
  const int dir = ::open(target.parent_path().empty() ? "." : target.parent_path().c_str(),
                         O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
  return absl::OkStatus();
}

}  // namespace cpm::core::io
