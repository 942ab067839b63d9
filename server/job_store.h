// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "cpm/v1/training.pb.h"

struct sqlite3;

namespace cpm::server {

// The daemon's durable state: one SQLite file (WAL mode) in the data directory holding jobs, their
// progress events and uploaded datasets. Opening applies any pending schema migrations in one
// transaction; a file written by a newer cpmd (higher schema version) is refused rather than
// guessed at. Jobs and datasets are kept as their serialized cpm.v1 messages beside the columns
// that queries filter and sort on. Thread-safe (one connection behind a mutex).
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

  // ---- Jobs. Writes of a job and its events commit together (a crash keeps both or neither).
  // ALREADY_EXISTS when the id or the name is taken.
  absl::Status insert_job(const cpm::v1::Job& job, const cpm::v1::JobEvent& event);
  // Replaces the stored job (same id) and appends `events` (their seq numbers follow the last).
  absl::Status update_job(const cpm::v1::Job& job, const std::vector<cpm::v1::JobEvent>& events = {});
  absl::StatusOr<std::optional<cpm::v1::Job>> job(const std::string& id);
  absl::StatusOr<bool> job_name_taken(const std::string& name);
  // Where a listing stopped: the creation time and rowid of its last item. A page that starts
  // after it neither repeats nor skips items when others are created in between.
  struct ListPosition {
    int64_t create_time = 0;
    int64_t rowid = 0;
  };
  // Up to `limit` jobs in `states` (empty: all) after `after`, newest first (with oldest_first, in
  // submission order: the scheduler's queue); `total` gets the count of all matches and `next`
  // the position to continue from, or nullopt when nothing is left.
  absl::StatusOr<std::vector<cpm::v1::Job>> jobs(const std::vector<cpm::v1::JobState>& states,
                                                  const std::optional<ListPosition>& after, int64_t limit,
                                                  int64_t* total = nullptr, bool oldest_first = false,
                                                  std::optional<ListPosition>* next = nullptr);
  // Jobs by state, all states counted in one query (the metrics scrape).
  absl::StatusOr<std::map<cpm::v1::JobState, int64_t>> count_jobs_by_state();
  // Events of job `id` with seq > after_seq and step >= from_step, in order, with their seq.
  using SequencedEvent = std::pair<int64_t, cpm::v1::JobEvent>;
  absl::StatusOr<std::vector<SequencedEvent>> events(const std::string& id, int64_t after_seq,
                                                     int64_t from_step = 0);
  // Highest seq of job `id` (0 when it has none).
  absl::StatusOr<int64_t> last_seq(const std::string& id);
  // Drops the progress, eval and checkpoint events after `step`: a job resumed from the
  // checkpoint of `step` records those steps again (state changes stay).
  absl::Status drop_events_after(const std::string& id, int64_t step);

  // ---- Uploaded datasets: the Dataset message, its folder and the dataset file inside it.
  struct StoredDataset {
    cpm::v1::Dataset dataset;
    std::string dir;
    std::string dataset_file;  // relative to dir
  };
  absl::Status insert_dataset(const StoredDataset& dataset);
  absl::StatusOr<std::optional<StoredDataset>> dataset(const std::string& id);
  // Newest first, paged as jobs().
  absl::StatusOr<std::vector<StoredDataset>> datasets(const std::optional<ListPosition>& after, int64_t limit,
                                                      int64_t* total = nullptr,
                                                      std::optional<ListPosition>* next = nullptr);

 private:
  class Statement;
  JobStore(std::string path, sqlite3* db) : path_(std::move(path)), db_(db) {}
  absl::Status exec(const std::string& sql) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::string> query_text(const std::string& sql) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status migrate() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status append_events(const std::string& id, const std::vector<cpm::v1::JobEvent>& events)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Runs `body` in a transaction: COMMIT when it succeeds, ROLLBACK otherwise.
  absl::Status transaction(const std::function<absl::Status()>& body) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status error(const std::string& what) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A row of the dataset columns.
  static StoredDataset dataset_row(Statement& st);
  // One page of a listing whose query selects the item's create_time and rowid at `position_column`
  // and `position_column` + 1 and ends in "... WHERE [<filter> AND] <after ? (create_time, rowid)
  // </> (?, ?) : 1> ORDER BY ... LIMIT ?": binds the position and limit + 1 (the extra row says whether a
  // next page exists), calls `take` for each of the first `limit` rows until it returns false, and
  // sets `next` to the last taken row's position when one more row exists. Returns SQLITE_DONE when
  // it read the page (or `take` stopped it), else SQLite's error code.
  static int read_page(Statement& st, const std::optional<ListPosition>& after, int64_t limit, int position_column,
                       std::optional<ListPosition>* next, const std::function<bool()>& take);

  const std::string path_;
  std::mutex mu_;
  sqlite3* db_ ABSL_GUARDED_BY(mu_);
};

}  // namespace cpm::server
