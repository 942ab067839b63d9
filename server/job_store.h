// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"

struct sqlite3;

namespace cpm::server {

// The daemon's durable state: one SQLite file (WAL mode) in the data directory holding jobs, their
// progress events and uploaded datasets. Opening applies any pending schema migrations in one
// transaction; a file written by a newer cpmd (higher schema version) is refused rather than
// guessed at. Not thread-safe: the daemon serialises access.
class JobStore {
 public:
  // Creates the file if missing. Errors name the path: FAILED_PRECONDITION for a file that is not
  // a cpmd job store or comes from a newer version, UNAVAILABLE when SQLite cannot open it.
  static absl::StatusOr<std::unique_ptr<JobStore>> open(const std::string& path);
  ~JobStore();
  JobStore(const JobStore&) = delete;
  JobStore& operator=(const JobStore&) = delete;

  // The schema version this build writes.
  static int latest_schema_version();
  absl::StatusOr<int> schema_version();
  // "wal" once opened.
  absl::StatusOr<std::string> journal_mode();
  const std::string& path() const { return path_; }

 private:
  JobStore(std::string path, sqlite3* db) : path_(std::move(path)), db_(db) {}
  absl::Status exec(const std::string& sql);
  absl::StatusOr<std::string> query_text(const std::string& sql);
  absl::Status migrate();

  std::string path_;
  sqlite3* db_;
};

}  // namespace cpm::server
