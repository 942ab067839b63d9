// SPDX-License-Identifier: Apache-2.0
#include "job_store.h"

#include <sqlite3.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

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
      // 2: the whole Job message (progress, last eval, counts) and each event's kind, so a
      // resumed job can drop the steps it will record again without touching its state changes.
      R"sql(
        ALTER TABLE jobs ADD COLUMN record BLOB;
        ALTER TABLE job_events ADD COLUMN kind INTEGER NOT NULL DEFAULT 0;
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
  std::lock_guard<std::mutex> lock(store->mu_);
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
  std::lock_guard<std::mutex> lock(mu_);
  auto v = query_text("PRAGMA user_version");
  if (!v.ok()) return v.status();
  return std::stoi(*v);
}

absl::StatusOr<std::string> JobStore::journal_mode() {
  std::lock_guard<std::mutex> lock(mu_);
  return query_text("PRAGMA journal_mode");
}

absl::Status JobStore::migrate() {
  auto text = query_text("PRAGMA user_version");
  if (!text.ok()) return text.status();
  const absl::StatusOr<int> version = std::stoi(*text);
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

// ---- Statements -------------------------------------------------------------------------------

// A prepared statement; binds are 1-based, columns 0-based.
class JobStore::Statement {
 public:
  Statement(sqlite3* db, const std::string& sql) : db_(db) {
    rc_ = sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt_, nullptr);
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  bool prepared() const { return rc_ == SQLITE_OK; }
  Statement& bind(int i, int64_t v) {
    sqlite3_bind_int64(stmt_, i, v);
    return *this;
  }
  Statement& bind(int i, const std::string& text) {
    sqlite3_bind_text(stmt_, i, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Statement& bind_blob(int i, const std::string& bytes) {
    sqlite3_bind_blob(stmt_, i, bytes.data(), static_cast<int>(bytes.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Statement& bind_optional_time(int i, bool set, int64_t micros) {
    if (set) return bind(i, micros);
    sqlite3_bind_null(stmt_, i);
    return *this;
  }
  // SQLITE_ROW, SQLITE_DONE or an error code.
  int step() { return sqlite3_step(stmt_); }
  int64_t integer(int col) { return sqlite3_column_int64(stmt_, col); }
  std::string bytes(int col) {
    const void* p = sqlite3_column_blob(stmt_, col);
    return p ? std::string(static_cast<const char*>(p), static_cast<size_t>(sqlite3_column_bytes(stmt_, col)))
             : std::string();
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  int rc_;
};

namespace {

int64_t micros(const google::protobuf::Timestamp& t) { return t.seconds() * 1000000 + t.nanos() / 1000; }

std::string in_states(const std::vector<cpm::v1::JobState>& states) {
  if (states.empty()) return "1";
  std::vector<std::string> values;
  for (cpm::v1::JobState s : states) values.push_back(std::to_string(static_cast<int>(s)));
  return absl::StrCat("state IN (", absl::StrJoin(values, ","), ")");
}

}  // namespace

absl::Status JobStore::error(const std::string& what) {
  const int code = sqlite3_extended_errcode(db_);
  std::string msg = absl::StrCat("job store ", path_, ": ", what, ": ", sqlite3_errmsg(db_));
  if (code == SQLITE_CONSTRAINT_UNIQUE || code == SQLITE_CONSTRAINT_PRIMARYKEY) {
    return absl::AlreadyExistsError(msg);
  }
  if ((code & 0xff) == SQLITE_FULL || (code & 0xff) == SQLITE_IOERR) return absl::ResourceExhaustedError(msg);
  return absl::InternalError(msg);
}

absl::Status JobStore::transaction(const std::function<absl::Status()>& body) {
  if (auto s = exec("BEGIN IMMEDIATE"); !s.ok()) return s;
  absl::Status s = body();
  if (s.ok()) s = exec("COMMIT");
  if (!s.ok()) exec("ROLLBACK").IgnoreError();
  return s;
}

absl::Status JobStore::append_events(const std::string& id, const std::vector<cpm::v1::JobEvent>& events) {
  if (events.empty()) return absl::OkStatus();
  Statement last(db_, "SELECT COALESCE(MAX(seq), 0) FROM job_events WHERE job_id = ?");
  if (!last.prepared()) return error("reading events");
  last.bind(1, id);
  if (last.step() != SQLITE_ROW) return error("reading events");
  int64_t seq = last.integer(0);
  for (const cpm::v1::JobEvent& e : events) {
    Statement one(db_, "INSERT INTO job_events (job_id, seq, step, event, kind) VALUES (?, ?, ?, ?, ?)");
    one.bind(1, id).bind(2, ++seq).bind(3, e.step()).bind_blob(4, e.SerializeAsString());
    one.bind(5, static_cast<int64_t>(e.event_case()));
    if (one.step() != SQLITE_DONE) return error("adding events");
  }
  return absl::OkStatus();
}

absl::Status JobStore::insert_job(const cpm::v1::Job& job, const cpm::v1::JobEvent& event) {
  std::lock_guard<std::mutex> lock(mu_);
  return transaction([&]() -> absl::Status {
    Statement st(db_,
                 "INSERT INTO jobs (id, name, state, spec, error, create_time, start_time, end_time, "
                 "checkpoint_step, record) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    if (!st.prepared()) return error("adding a job");
    st.bind(1, job.id()).bind(2, job.spec().name()).bind(3, static_cast<int64_t>(job.state()));
    st.bind_blob(4, job.spec().SerializeAsString()).bind(5, job.error()).bind(6, micros(job.create_time()));
    st.bind_optional_time(7, job.has_start_time(), micros(job.start_time()));
    st.bind_optional_time(8, job.has_end_time(), micros(job.end_time()));
    st.bind(9, job.checkpoint_step()).bind_blob(10, job.SerializeAsString());
    if (st.step() != SQLITE_DONE) return error(absl::StrCat("adding job ", job.id()));
    return append_events(job.id(), {event});
  });
}

absl::Status JobStore::update_job(const cpm::v1::Job& job, const std::vector<cpm::v1::JobEvent>& events) {
  std::lock_guard<std::mutex> lock(mu_);
  return transaction([&]() -> absl::Status {
    Statement st(db_,
                 "UPDATE jobs SET state = ?, error = ?, start_time = ?, end_time = ?, checkpoint_step = ?, "
                 "record = ? WHERE id = ?");
    if (!st.prepared()) return error("updating a job");
    st.bind(1, static_cast<int64_t>(job.state())).bind(2, job.error());
    st.bind_optional_time(3, job.has_start_time(), micros(job.start_time()));
    st.bind_optional_time(4, job.has_end_time(), micros(job.end_time()));
    st.bind(5, job.checkpoint_step()).bind_blob(6, job.SerializeAsString()).bind(7, job.id());
    if (st.step() != SQLITE_DONE) return error(absl::StrCat("updating job ", job.id()));
    if (sqlite3_changes(db_) != 1) return absl::NotFoundError(absl::StrCat("job ", job.id(), " is not stored"));
    return append_events(job.id(), events);
  });
}

absl::StatusOr<std::optional<cpm::v1::Job>> JobStore::job(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  Statement st(db_, "SELECT record FROM jobs WHERE id = ?");
  if (!st.prepared()) return error("reading a job");
  st.bind(1, id);
  const int rc = st.step();
  if (rc == SQLITE_DONE) return std::optional<cpm::v1::Job>();
  if (rc != SQLITE_ROW) return error(absl::StrCat("reading job ", id));
  cpm::v1::Job job;
  if (!job.ParseFromString(st.bytes(0))) {
    return absl::DataLossError(absl::StrCat("job store ", path_, ": job ", id, " is unreadable"));
  }
  return std::optional<cpm::v1::Job>(std::move(job));
}

absl::StatusOr<bool> JobStore::job_name_taken(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  Statement st(db_, "SELECT 1 FROM jobs WHERE name = ?");
  if (!st.prepared()) return error("reading jobs");
  st.bind(1, name);
  const int rc = st.step();
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) return error("reading jobs");
  return rc == SQLITE_ROW;
}

int JobStore::read_page(Statement& st, const std::optional<ListPosition>& after, int64_t limit, int position_column,
                        std::optional<ListPosition>* next, const std::function<bool()>& take) {
  if (after) st.bind(1, after->create_time).bind(2, after->rowid);
  st.bind(after ? 3 : 1, limit + 1);
  if (next) next->reset();  // after the binds: `next` may be `after` itself (continue from here)
  if (limit <= 0) return SQLITE_DONE;
  ListPosition last;
  int64_t taken = 0;
  int rc;
  while ((rc = st.step()) == SQLITE_ROW) {
    if (taken == limit) {
      if (next) *next = last;
      return SQLITE_DONE;
    }
    last = {st.integer(position_column), st.integer(position_column + 1)};
    ++taken;
    if (!take()) return SQLITE_DONE;
  }
  return rc;
}

absl::StatusOr<std::vector<cpm::v1::Job>> JobStore::jobs(const std::vector<cpm::v1::JobState>& states,
                                                          const std::optional<ListPosition>& after, int64_t limit,
                                                          int64_t* total, bool oldest_first,
                                                          std::optional<ListPosition>* next) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::string where = in_states(states);
  if (total) {
    Statement count(db_, absl::StrCat("SELECT COUNT(*) FROM jobs WHERE ", where));
    if (!count.prepared() || count.step() != SQLITE_ROW) return error("counting jobs");
    *total = count.integer(0);
  }
  // rowid breaks ties between jobs created in the same microsecond, in insertion order. One row
  // more than asked says whether a next page exists.
  const char* order = oldest_first ? "create_time, rowid" : "create_time DESC, rowid DESC";
  const char* beyond = oldest_first ? "(create_time, rowid) > (?, ?)" : "(create_time, rowid) < (?, ?)";
  Statement st(db_, absl::StrCat("SELECT id, record, create_time, rowid FROM jobs WHERE ", where, " AND ",
                                 after ? beyond : "1", " ORDER BY ", order, " LIMIT ?"));
  if (!st.prepared()) return error("listing jobs");
  std::vector<cpm::v1::Job> out;
  std::string unreadable;
  const int rc = read_page(st, after, limit, /*position_column=*/2, next, [&] {
    cpm::v1::Job job;
    if (!job.ParseFromString(st.bytes(1))) {
      unreadable = st.bytes(0);
      return false;
    }
    out.push_back(std::move(job));
    return true;
  });
  if (!unreadable.empty()) {
    return absl::DataLossError(absl::StrCat("job store ", path_, ": job ", unreadable, " is unreadable"));
  }
  if (rc != SQLITE_DONE) return error("listing jobs");
  return out;
}

absl::StatusOr<std::map<cpm::v1::JobState, int64_t>> JobStore::count_jobs_by_state() {
  std::lock_guard<std::mutex> lock(mu_);
  Statement st(db_, "SELECT state, COUNT(*) FROM jobs GROUP BY state");
  if (!st.prepared()) return error("counting jobs");
  std::map<cpm::v1::JobState, int64_t> out;
  int rc;
  while ((rc = st.step()) == SQLITE_ROW) out[static_cast<cpm::v1::JobState>(st.integer(0))] = st.integer(1);
  if (rc != SQLITE_DONE) return error("counting jobs");
  return out;
}

absl::StatusOr<std::vector<JobStore::SequencedEvent>> JobStore::events(const std::string& id, int64_t after_seq,
                                                                       int64_t from_step) {
  std::lock_guard<std::mutex> lock(mu_);
  Statement st(db_, "SELECT seq, event FROM job_events WHERE job_id = ? AND seq > ? AND step >= ? ORDER BY seq");
  if (!st.prepared()) return error("reading events");
  st.bind(1, id).bind(2, after_seq).bind(3, from_step);
  std::vector<SequencedEvent> out;
  int rc;
  while ((rc = st.step()) == SQLITE_ROW) {
    cpm::v1::JobEvent e;
    if (!e.ParseFromString(st.bytes(1))) {
      return absl::DataLossError(absl::StrCat("job store ", path_, ": an event of job ", id, " is unreadable"));
    }
    out.emplace_back(st.integer(0), std::move(e));
  }
  if (rc != SQLITE_DONE) return error("reading events");
  return out;
}

absl::StatusOr<int64_t> JobStore::last_seq(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  Statement st(db_, "SELECT COALESCE(MAX(seq), 0) FROM job_events WHERE job_id = ?");
  if (!st.prepared()) return error("reading events");
  st.bind(1, id);
  if (st.step() != SQLITE_ROW) return error("reading events");
  return st.integer(0);
}

absl::Status JobStore::drop_events_after(const std::string& id, int64_t step) {
  std::lock_guard<std::mutex> lock(mu_);
  Statement st(db_, absl::StrCat("DELETE FROM job_events WHERE job_id = ? AND step > ? AND kind IN (",
                                 static_cast<int>(cpm::v1::JobEvent::kProgress), ",",
                                 static_cast<int>(cpm::v1::JobEvent::kEval), ",",
                                 static_cast<int>(cpm::v1::JobEvent::kCheckpoint), ")"));
  if (!st.prepared()) return error("dropping events");
  st.bind(1, id).bind(2, step);
  if (st.step() != SQLITE_DONE) return error(absl::StrCat("dropping events of job ", id));
  return absl::OkStatus();
}

absl::Status JobStore::insert_dataset(const StoredDataset& d) {
  std::lock_guard<std::mutex> lock(mu_);
  Statement st(db_,
               "INSERT INTO datasets (id, name, format, dir, dataset_file, num_records, num_files, size_bytes, "
               "create_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)");
  if (!st.prepared()) return error("adding a dataset");
  const cpm::v1::Dataset& m = d.dataset;
  st.bind(1, m.id()).bind(2, m.name()).bind(3, static_cast<int64_t>(m.format())).bind(4, d.dir);
  st.bind(5, d.dataset_file).bind(6, m.num_records()).bind(7, m.num_files()).bind(8, m.size_bytes());
  st.bind(9, micros(m.create_time()));
  if (st.step() != SQLITE_DONE) return error(absl::StrCat("adding dataset ", m.id()));
  return absl::OkStatus();
}

namespace {

constexpr const char* kDatasetColumns =
    "id, name, format, dir, dataset_file, num_records, num_files, size_bytes, create_time";
constexpr int kDatasetCreateTime = 8;  // its column

}  // namespace

absl::StatusOr<std::optional<JobStore::StoredDataset>> JobStore::dataset(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  Statement st(db_, absl::StrCat("SELECT ", kDatasetColumns, " FROM datasets WHERE id = ?"));
  if (!st.prepared()) return error("reading a dataset");
  st.bind(1, id);
  const int rc = st.step();
  if (rc == SQLITE_DONE) return std::optional<StoredDataset>();
  if (rc != SQLITE_ROW) return error(absl::StrCat("reading dataset ", id));
  return std::optional<StoredDataset>(dataset_row(st));
}

absl::StatusOr<std::vector<JobStore::StoredDataset>> JobStore::datasets(const std::optional<ListPosition>& after,
                                                                         int64_t limit, int64_t* total,
                                                                         std::optional<ListPosition>* next) {
  std::lock_guard<std::mutex> lock(mu_);
  if (total) {
    Statement count(db_, "SELECT COUNT(*) FROM datasets");
    if (!count.prepared() || count.step() != SQLITE_ROW) return error("counting datasets");
    *total = count.integer(0);
  }
  Statement st(db_, absl::StrCat("SELECT ", kDatasetColumns, ", rowid FROM datasets WHERE ",
                                 after ? "(create_time, rowid) < (?, ?)" : "1",
                                 " ORDER BY create_time DESC, rowid DESC LIMIT ?"));
  if (!st.prepared()) return error("listing datasets");
  std::vector<StoredDataset> out;
  const int rc = read_page(st, after, limit, kDatasetCreateTime, next, [&] {
    out.push_back(dataset_row(st));
    return true;
  });
  if (rc != SQLITE_DONE) return error("listing datasets");
  return out;
}

JobStore::StoredDataset JobStore::dataset_row(Statement& st) {
  JobStore::StoredDataset d;
  cpm::v1::Dataset& m = d.dataset;
  m.set_id(st.bytes(0));
  m.set_name(st.bytes(1));
  m.set_format(static_cast<cpm::v1::DatasetFormat>(st.integer(2)));
  d.dir = st.bytes(3);
  d.dataset_file = st.bytes(4);
  m.set_num_records(st.integer(5));
  m.set_num_files(st.integer(6));
  m.set_size_bytes(st.integer(7));
  const int64_t t = st.integer(kDatasetCreateTime);
  m.mutable_create_time()->set_seconds(t / 1000000);
  m.mutable_create_time()->set_nanos(static_cast<int32_t>(t % 1000000) * 1000);
  return d;
}

}  // namespace cpm::server
