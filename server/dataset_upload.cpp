// SPDX-License-Identifier: Apache-2.0
#include "dataset_upload.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "api_values.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/logging.h"
#include "common/sha256.h"
#include "common/status_macros.h"
#include "io/atomic_file.h"
#include "job_store.h"
#include "model_host.h"
#include "runtime/engine.h"
#include "train/dataset.h"

namespace cpm::server {
namespace {

namespace fs = std::filesystem;
using cpm::v1::UploadDatasetRequest;

absl::Status bad(const std::string& why) { return absl::InvalidArgumentError(why); }

bool is_hex_sha256(const std::string& s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

cpm::v1::DatasetFormat format_of(const cpm::v1::DatasetManifest& m) {
  if (m.format() != cpm::v1::DATASET_FORMAT_UNSPECIFIED) return m.format();
  const std::string ext = fs::path(m.dataset_file()).extension().string();
  if (ext == ".csv") return cpm::v1::DATASET_FORMAT_CSV;
  return cpm::v1::DATASET_FORMAT_CONVERSATION_JSON;
}

// One file of the manifest as it arrives.
struct Incoming {
  int64_t size = 0;
  std::string sha256;
  int64_t written = 0;
  bool done = false;
  core::Sha256 hash;
};

// Removes the staging folder unless the upload was published.
struct Staging {
  std::string dir;
  ~Staging() {
    if (dir.empty()) return;
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

absl::Status check_manifest(const cpm::v1::DatasetManifest& m, const UploadLimits& limits) {
  if (m.files().empty()) return bad("manifest: no files listed");
  if (m.files_size() > limits.max_files) {
    return bad(absl::StrCat("manifest: ", m.files_size(), " files; at most ", limits.max_files));
  }
  if (m.dataset_file().empty()) return bad("manifest.dataset_file is empty: name the JSON or CSV file");
  CPM_RETURN_IF_ERROR(check_relative_path(m.dataset_file()));
  const std::string ext = fs::path(m.dataset_file()).extension().string();
  if (m.format() == cpm::v1::DATASET_FORMAT_UNSPECIFIED && ext != ".json" && ext != ".jsonl" && ext != ".csv") {
    return bad(absl::StrCat("manifest.dataset_file ", m.dataset_file(),
                            ": cannot tell the format from the name; use .json, .jsonl or .csv, or set format"));
  }
  int64_t total = 0;
  bool listed = false;
  for (const cpm::v1::FileInfo& f : m.files()) {
    CPM_RETURN_IF_ERROR(check_relative_path(f.path()));
    if (f.size_bytes() < 0) return bad(absl::StrCat("manifest: ", f.path(), " has a negative size"));
    if (!is_hex_sha256(f.sha256())) {
      return bad(absl::StrCat("manifest: ", f.path(), ": sha256 must be 64 lower-case hex digits"));
    }
    total += f.size_bytes();
    if (total > limits.max_total_bytes) {
      return bad(absl::StrCat("manifest: the files add up to more than ", limits.max_total_bytes, " bytes"));
    }
    listed = listed || f.path() == m.dataset_file();
  }
  if (!listed) return bad(absl::StrCat("manifest.dataset_file ", m.dataset_file(), " is not among its files"));
  // A file may not also be a folder of another ("a" and "a/b"): one of them could not be written.
  std::set<std::string> paths;
  for (const cpm::v1::FileInfo& f : m.files()) paths.insert(f.path());
  for (const std::string& path : paths) {
    for (size_t slash = path.find('/'); slash != std::string::npos; slash = path.find('/', slash + 1)) {
      if (paths.count(path.substr(0, slash))) {
        return bad(absl::StrCat("manifest: ", path.substr(0, slash), " is a file and also a folder of ", path));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status check_relative_path(const std::string& path) {
  const auto fail = [&](const char* why) {
    return bad(absl::StrCat("path \"", path, "\": ", why, "; give a relative path with '/' separators"));
  };
  if (path.empty()) return fail("empty");
  if (path.front() == '/') return fail("absolute");
  if (path.find('\0') != std::string::npos || path.find('\\') != std::string::npos) {
    return fail("holds a NUL or a backslash");
  }
  if (path.size() > 4096) return fail("longer than 4096 bytes");
  for (absl::string_view part : absl::StrSplit(path, '/')) {
    if (part.empty() || part == "." || part == "..") return fail("has an empty, '.' or '..' component");
  }
  return absl::OkStatus();
}

DatasetUploads::DatasetUploads(JobStore& store, ModelHost& host, std::string datasets_dir, UploadLimits limits)
    : store_(store), host_(host), dir_(std::move(datasets_dir)), limits_(limits) {
  if (const int n = core::io::remove_stale_staging(dir_); n > 0) {
    core::log_info("removed uploads a crash interrupted", {{"dir", dir_}, {"count", n}});
  }
}

absl::StatusOr<cpm::v1::Dataset> DatasetUploads::receive(const std::function<bool(UploadDatasetRequest&)>& next,
                                                         const std::function<bool()>& cancelled) {
  UploadDatasetRequest message;
  if (!next(message)) return bad("the upload stream is empty: send a DatasetManifest first");
  if (!message.has_manifest()) return bad("the first message of an upload must be the DatasetManifest");
  const cpm::v1::DatasetManifest manifest = message.manifest();
  CPM_RETURN_IF_ERROR(check_manifest(manifest, limits_));
  // The model's tokenizer validates the records; without it there is nothing to check against.
  absl::StatusOr<core::runtime::Engine*> engine = host_.engine();
  if (!engine.ok()) return engine.status();

  std::map<std::string, Incoming> files;
  for (const cpm::v1::FileInfo& f : manifest.files()) {
    auto [it, fresh] = files.try_emplace(f.path());
    if (!fresh) return bad(absl::StrCat("manifest: ", f.path(), " is listed twice"));
    it->second.size = f.size_bytes();
    it->second.sha256 = f.sha256();
  }
  const std::string id = random_id("ds-");
  const std::string final_dir = (fs::path(dir_) / id).string();
  std::error_code ec;
  fs::create_directories(dir_, ec);
  // Refused before a byte arrives, rather than filling the disk that the job store and the
  // checkpoints share. A margin of 1 GiB stays free.
  int64_t total = 0;
  for (const auto& [path, f] : files) total += f.size;
  if (const fs::space_info space = fs::space(dir_, ec); !ec && static_cast<int64_t>(space.available) < total + (int64_t{1} << 30)) {
    return absl::ResourceExhaustedError(absl::StrCat("the upload needs ", total, " bytes and the daemon's data disk has ",
                                                     space.available, " free (1 GiB stays free); free some space"));
  }
  CPM_ASSIGN_OR_RETURN(std::string staged, core::io::staging_directory(final_dir));
  Staging staging{staged};

  std::ofstream out;
  std::string open_path;
  const auto finish_file = [&](const std::string& path, Incoming& f) -> absl::Status {
    if (open_path == path) {
      out.close();
      open_path.clear();
      if (out.fail()) return absl::UnavailableError(absl::StrCat("writing ", path, " on the daemon host failed"));
    }
    if (f.written != f.size) {
      return bad(absl::StrCat(path, ": ", f.written, " bytes arrived, the manifest says ", f.size));
    }
    const std::string digest = f.hash.hex_digest();
    if (digest != f.sha256) {
      return bad(absl::StrCat(path, ": SHA-256 of the bytes received is ", digest, ", the manifest says ", f.sha256,
                              "; the file changed while it was sent, or the manifest is wrong"));
    }
    f.done = true;
    return absl::OkStatus();
  };
  // Empty files need no chunk.
  for (auto& [path, f] : files) {
    if (f.size == 0) {
      fs::create_directories((fs::path(staged) / path).parent_path(), ec);
      if (!std::ofstream(fs::path(staged) / path, std::ios::binary)) {
        return absl::UnavailableError(absl::StrCat("cannot write ", path, " on the daemon host"));
      }
      CPM_RETURN_IF_ERROR(finish_file(path, f));
    }
  }
  while (next(message)) {
    if (cancelled()) return absl::CancelledError("the upload was cancelled");
    if (!message.has_chunk()) return bad("after the manifest, every message must be a FileChunk");
    const cpm::v1::FileChunk& c = message.chunk();
    auto it = files.find(c.path());
    if (it == files.end()) return bad(absl::StrCat("chunk for ", c.path(), ", which the manifest does not list"));
    Incoming& f = it->second;
    if (f.done) {
      // An empty file is complete from the start; clients still send it one empty last chunk.
      if (f.size == 0 && c.offset() == 0 && c.data().empty()) continue;
      return bad(absl::StrCat("chunk for ", c.path(), " after its last chunk"));
    }
    if (c.offset() != f.written) {
      return bad(absl::StrCat(c.path(), ": chunk at offset ", c.offset(), ", expected ", f.written,
                              " (chunks of a file come in order, without gaps)"));
    }
    if (f.written + static_cast<int64_t>(c.data().size()) > f.size) {
      return bad(absl::StrCat(c.path(), ": more bytes than the manifest's ", f.size));
    }
    if (open_path != c.path()) {
      if (out.is_open()) out.close();
      const fs::path target = fs::path(staged) / c.path();
      fs::create_directories(target.parent_path(), ec);
      out.open(target, std::ios::binary | std::ios::app);
      if (!out) return absl::UnavailableError(absl::StrCat("cannot write ", c.path(), " on the daemon host"));
      open_path = c.path();
    }
    if (!out.write(c.data().data(), static_cast<std::streamsize>(c.data().size()))) {
      return absl::ResourceExhaustedError(absl::StrCat("writing ", c.path(),
                                                       " on the daemon host failed; is its disk full?"));
    }
    f.hash.update(c.data());
    f.written += static_cast<int64_t>(c.data().size());
    if (c.last()) CPM_RETURN_IF_ERROR(finish_file(c.path(), f));
  }
  if (cancelled()) return absl::CancelledError("the upload was cancelled");
  if (out.is_open()) out.close();
  std::vector<std::string> missing;
  for (const auto& [path, f] : files) {
    if (!f.done) missing.push_back(path);
  }
  if (!missing.empty()) {
    return bad(absl::StrCat("the stream ended before ", missing.size(), " file(s) were complete (", missing.front(),
                            missing.size() > 1 ? ", ..." : "", "); send every byte and mark each file's last chunk"));
  }

  // Records are checked as a job would read them, with the default example options.
  core::train::ReadOptions read;
  const cpm::v1::DatasetFormat format = format_of(manifest);
  read.format = format == cpm::v1::DATASET_FORMAT_CSV ? core::train::DatasetFormat::kCsv
                                                      : core::train::DatasetFormat::kConversationJson;
  CPM_ASSIGN_OR_RETURN(core::train::DatasetFile parsed,
                       core::train::read_dataset((fs::path(staged) / manifest.dataset_file()).string(), read));
  CPM_ASSIGN_OR_RETURN(auto builder,
                       core::train::ExampleBuilder::create((*engine)->tokenizer(), (*engine)->chat_template(),
                                                           (*engine)->configs().preprocessor, {}));
  const core::train::ValidationReport report = core::train::validate_dataset(std::move(parsed), builder);
  if (absl::Status s = core::train::check_bad_records(report, /*skip_bad_records=*/true); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("dataset ", manifest.dataset_file(), ": ", s.message()));
  }

  cpm::v1::Dataset dataset;
  dataset.set_id(id);
  dataset.set_name(manifest.name().empty() ? fs::path(manifest.dataset_file()).filename().string() : manifest.name());
  dataset.set_format(format);
  dataset.set_num_records(static_cast<int64_t>(report.good.size()));
  dataset.set_num_files(manifest.files_size());
  int64_t bytes = 0;
  for (const auto& [path, f] : files) bytes += f.size;
  dataset.set_size_bytes(bytes);
  set_now(dataset.mutable_create_time());
  CPM_RETURN_IF_ERROR(core::io::publish_directory(staged, final_dir));
  staging.dir.clear();
  if (absl::Status s = store_.insert_dataset({dataset, final_dir, manifest.dataset_file()}); !s.ok()) {
    fs::remove_all(final_dir, ec);
    return s;
  }
  core::log_info("dataset uploaded", {{"dataset", id}, {"name", dataset.name()}, {"records", dataset.num_records()},
                                      {"bad_records", static_cast<int64_t>(report.bad.size())},
                                      {"files", dataset.num_files()}, {"bytes", bytes}});
  return dataset;
}

absl::StatusOr<cpm::v1::ListDatasetsResponse> DatasetUploads::list(const cpm::v1::ListDatasetsRequest& request) {
  CPM_ASSIGN_OR_RETURN(const Page page, parse_page(request.page()));
  std::optional<JobStore::ListPosition> next;
  CPM_ASSIGN_OR_RETURN(auto stored, store_.datasets(page.after, page.size, /*total=*/nullptr, &next));
  cpm::v1::ListDatasetsResponse out;
  for (auto& d : stored) *out.add_datasets() = std::move(d.dataset);
  out.set_next_page_token(page_token(next));
  return out;
}

}  // namespace cpm::server
