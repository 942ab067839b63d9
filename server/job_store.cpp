// SPDX-License-Identifier: Apache-2.0
#include "job_store.h"

#include <sqlite3.h>

#include <vector>

#include "absl/strings/str_cat.h"

namespace cpm::server {
namespace {

// Migration N (1-based) moves the schema from version N-1 to N. Append only; never edit one that
// has shipped.
const std::vector<std::string>& migrations() {
  static const std::vector<std::string> kMigrations = {
      // 1: jobs, their event history (WatchJob replays it) and uploaded datasets. Protobuf
      // messages are stored serialized; the columns are what queries filter and sort on.
      R"sql(
        CREATE TABLE jobs (
          id           TEXT PRIMARY KEY,
          name         TEXT NOT NULL UNIQUE,
          state        INTEGER NOT NULL,
          spec         BLOB NOT NULL,
          error        TEXT NOT NULL DEFAULT '',
          create_time  INTEGER NOT NULL,
          start_time   INTEGER,
          end_time     INTEGER,
          checkpoint_step INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX jobs_by_state ON jobs(state, create_time);
        CREATE TABLE job_events (
          job_id  TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
          seq     INTEGER NOT NULL,
          step    INTEGER NOT NULL,
          event   BLOB NOT NULL,
          PRIMARY KEY (job_id, seq)
        );
        CREATE INDEX job_events_by_step ON job_events(job_id, step);
        CREATE TABLE datasets (
          id           TEXT PRIMARY KEY,
          name         TEXT NOT NULL,
          format       INTEGER NOT NULL,
          dir          TEXT NOT NULL,
          dataset_file TEXT NOT NULL,
          num_records  INTEGER NOT NULL,
          num_files    INTEGER NOT NULL,
          size_bytes   INTEGER NOT NULL,
          create_time  INTEGER NOT NULL
        );
      )sql",
  };
  return kMigrations;
}

}  // namespace

int JobStore::latest_schema_version() { return static_cast<int>(migrations().size()); }

absl::StatusOr<std::unique_ptr<JobStore>> JobStore::open(const std::string& path) {
  sqlite3* db = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &db,
                                 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                                 nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close(db);
    return absl::UnavailableError(absl::StrCat("job store ", path, ": cannot open: ", msg));
  }
  std::unique_ptr<JobStore> store(new JobStore(path, db));
  sqlite3_busy_timeout(db, 5000);
  // journal_mode is the first statement that reads the file, so it is where "not a database"
  // shows up.
  auto mode = store->query_text("PRAGMA journal_mode=WAL");
  if (!mode.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        mode.status().message(), "; is it a cpmd job store? move it away to start afresh"));
  }
  if (auto s = store->exec("PRAGMA foreign_keys=ON; PRAGMA synchronous=NORMAL"); !s.ok()) return s;
  if (auto s = store->migrate(); !s.ok()) return s;
  return store;
}

JobStore::~JobStore() { sqlite3_close(db_); }

absl::Status JobStore::exec(const std::string& sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errmsg(db_);
    sqlite3_free(err);
    return absl::InternalError(absl::StrCat("job store ", path_, ": ", msg));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> JobStore::query_text(const std::string& sql) {
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &stmt, nullptr) != SQLITE_OK) {
    return absl::InternalError(absl::StrCat("job store ", path_, ": ", sqlite3_errmsg(db_)));
  }
  std::string out;
  const int rc = sqlite3_step(stmt);
  if (rc == SQLITE_ROW) {
    const unsigned char* text = sqlite3_column_text(stmt, 0);
    if (text) out = reinterpret_cast<const char*>(text);
  }
  sqlite3_finalize(stmt);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
    return absl::InternalError(absl::StrCat("job store ", path_, ": ", sqlite3_errstr(rc)));
  }
  return out;
}

absl::StatusOr<int> JobStore::schema_version() {
  auto v = query_text("PRAGMA user_version");
  if (!v.ok()) return v.status();
  return std::stoi(*v);
}

absl::StatusOr<std::string> JobStore::journal_mode() { return query_text("PRAGMA journal_mode"); }

absl::Status JobStore::migrate() {
  auto version = schema_version();
  if (!version.ok()) return version.status();
  const int latest = latest_schema_version();
  if (*version > latest) {
    return absl::FailedPreconditionError(
        absl::StrCat("job store ", path_, " has schema version ", *version,
                     ", newer than this cpmd understands (", latest, "); run a newer cpmd"));
  }
  for (int v = *version; v < latest; ++v) {
    // Each migration and its version bump commit together, so a crash leaves a valid version.
    const std::string sql = absl::StrCat("BEGIN IMMEDIATE;", migrations()[v],
                                         "PRAGMA user_version=", v + 1, "; COMMIT;");
    if (auto s = exec(sql); !s.ok()) {
      exec("ROLLBACK").IgnoreError();
      return absl::InternalError(absl::StrCat("migrating to schema version ", v + 1, ": ",
                                              s.message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace cpm::server
