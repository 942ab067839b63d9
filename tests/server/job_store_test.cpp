// SPDX-License-Identifier: Apache-2.0
#include "job_store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sqlite3.h>

#include "test_util.h"

namespace cpm::server {
namespace {

using ::testing::HasSubstr;

TEST(JobStore, CreatesAWalDatabaseAtTheLatestSchema) {
  testing::TempDir dir;
  auto store = JobStore::open(dir.file("cpmd.db"));
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ(*(*store)->journal_mode(), "wal");
  EXPECT_EQ(*(*store)->schema_version(), JobStore::latest_schema_version());
  EXPECT_GE(JobStore::latest_schema_version(), 1);
}

TEST(JobStore, ReopeningKeepsDataAndDoesNotMigrateTwice) {
  testing::TempDir dir;
  {
    auto store = JobStore::open(dir.file("cpmd.db"));
    ASSERT_TRUE(store.ok());
  }
  // Write a row with the sqlite3 library directly, as another tool would.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(dir.file("cpmd.db").c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db,
                         "INSERT INTO jobs(id, name, state, spec, create_time) "
                         "VALUES ('j1', 'first', 1, x'', 0)",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  auto store = JobStore::open(dir.file("cpmd.db"));
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ(*(*store)->schema_version(), JobStore::latest_schema_version());
  db = nullptr;
  ASSERT_EQ(sqlite3_open(dir.file("cpmd.db").c_str(), &db), SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT count(*) FROM jobs", -1, &stmt, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(stmt), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int(stmt, 0), 1);
  sqlite3_finalize(stmt);
  sqlite3_close(db);
}

TEST(JobStore, RefusesASchemaFromANewerVersion) {
  testing::TempDir dir;
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(dir.file("cpmd.db").c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "PRAGMA user_version=999", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  auto store = JobStore::open(dir.file("cpmd.db"));
  ASSERT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(store.status().message(), HasSubstr("schema version 999"));
  EXPECT_THAT(store.status().message(), HasSubstr("run a newer cpmd"));
}

TEST(JobStore, RefusesAFileThatIsNotADatabase) {
  testing::TempDir dir;
  const std::string path = dir.write("cpmd.db", std::string(8192, 'z'));
  auto store = JobStore::open(path);
  ASSERT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(store.status().message(), HasSubstr(path));
  EXPECT_THAT(store.status().message(), HasSubstr("is it a cpmd job store"));
}

TEST(JobStore, UnopenablePathIsUnavailable) {
  auto store = JobStore::open("/nonexistent-dir/cpmd.db");
  EXPECT_EQ(store.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(store.status().message(), HasSubstr("/nonexistent-dir/cpmd.db"));
}

cpm::v1::Job job(const std::string& id, const std::string& name, cpm::v1::JobState state, int64_t created) {
  cpm::v1::Job j;
  j.set_id(id);
  j.mutable_spec()->set_name(name);
  j.set_state(state);
  j.mutable_create_time()->set_seconds(created);
  return j;
}

cpm::v1::JobEvent event(const std::string& id, int64_t step, bool progress) {
  cpm::v1::JobEvent e;
  e.set_job_id(id);
  e.set_step(step);
  if (progress) {
    e.mutable_progress()->set_step(step);
  } else {
    e.mutable_state_change()->set_to(cpm::v1::JOB_STATE_RUNNING);
  }
  return e;
}

TEST(JobStore, JobsAndTheirEventsRoundTrip) {
  testing::TempDir dir;
  auto opened = JobStore::open(dir.file("cpmd.db"));
  ASSERT_TRUE(opened.ok()) << opened.status();
  JobStore& store = **opened;
  ASSERT_TRUE(store.insert_job(job("a", "first", cpm::v1::JOB_STATE_QUEUED, 10), event("a", 0, false)).ok());
  ASSERT_TRUE(store.insert_job(job("b", "second", cpm::v1::JOB_STATE_QUEUED, 20), event("b", 0, false)).ok());
  // The id and the name are unique.
  EXPECT_EQ(store.insert_job(job("a", "other", cpm::v1::JOB_STATE_QUEUED, 30), event("a", 0, false)).code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(store.insert_job(job("c", "first", cpm::v1::JOB_STATE_QUEUED, 30), event("c", 0, false)).code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(*store.job_name_taken("first"));
  EXPECT_FALSE(*store.job_name_taken("third"));

  cpm::v1::Job a = job("a", "first", cpm::v1::JOB_STATE_RUNNING, 10);
  a.mutable_progress()->set_step(4);
  ASSERT_TRUE(store.update_job(a, {event("a", 1, true), event("a", 2, true), event("a", 4, true)}).ok());
  EXPECT_EQ((*store.job("a"))->progress().step(), 4);
  EXPECT_FALSE(store.job("zz")->has_value());
  EXPECT_EQ(store.update_job(job("zz", "x", cpm::v1::JOB_STATE_RUNNING, 1)).code(), absl::StatusCode::kNotFound);

  // Newest first, filtered, paged; oldest first for the queue.
  int64_t total = 0;
  std::optional<JobStore::ListPosition> next;
  auto all = store.jobs({}, std::nullopt, 10, &total, false, &next);
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].id(), "b");
  EXPECT_EQ(total, 2);
  EXPECT_FALSE(next.has_value());
  auto queued = store.jobs({cpm::v1::JOB_STATE_QUEUED}, std::nullopt, 10, &total);
  ASSERT_EQ(queued->size(), 1u);
  EXPECT_EQ(total, 1);
  auto first = store.jobs({}, std::nullopt, 1, &total, /*oldest_first=*/true, &next);
  ASSERT_EQ(first->size(), 1u);
  EXPECT_EQ((*first)[0].id(), "a");
  ASSERT_TRUE(next.has_value());
  auto page = store.jobs({}, next, 1, &total, /*oldest_first=*/true, &next);
  ASSERT_EQ(page->size(), 1u);
  EXPECT_EQ((*page)[0].id(), "b");
  EXPECT_FALSE(next.has_value());
  // A job created between two pages neither repeats an item nor pushes one onto the next page.
  auto newest = store.jobs({}, std::nullopt, 1, &total, false, &next);
  EXPECT_EQ((*newest)[0].id(), "b");
  ASSERT_TRUE(store.insert_job(job("n", "newer", cpm::v1::JOB_STATE_QUEUED, 40), event("n", 0, false)).ok());
  auto rest = store.jobs({}, next, 10, &total, false, &next);
  ASSERT_EQ(rest->size(), 1u);
  EXPECT_EQ((*rest)[0].id(), "a");
  EXPECT_EQ(total, 3);
  auto counts = store.count_jobs_by_state();
  ASSERT_TRUE(counts.ok()) << counts.status();
  EXPECT_EQ(*counts, (std::map<cpm::v1::JobState, int64_t>{{cpm::v1::JOB_STATE_QUEUED, 2},
                                                           {cpm::v1::JOB_STATE_RUNNING, 1}}));

  // Events in order with their seq; from a step; after a seq.
  auto events = store.events("a", 0);
  ASSERT_EQ(events->size(), 4u);
  EXPECT_EQ((*events)[0].first, 1);
  EXPECT_EQ((*events)[3].second.progress().step(), 4);
  EXPECT_EQ(store.events("a", 0, 2)->size(), 2u);
  EXPECT_EQ(store.events("a", 3)->size(), 1u);
  EXPECT_EQ(*store.last_seq("a"), 4);
  EXPECT_EQ(*store.last_seq("b"), 1);

  // A resume from the checkpoint of step 1 drops later progress, keeps state changes, and new
  // events get fresh sequence numbers.
  ASSERT_TRUE(store.update_job(a, {event("a", 4, false)}).ok());
  ASSERT_TRUE(store.drop_events_after("a", 1).ok());
  events = store.events("a", 0);
  ASSERT_EQ(events->size(), 3u);
  EXPECT_TRUE((*events)[2].second.has_state_change());
  ASSERT_TRUE(store.update_job(a, {event("a", 2, true)}).ok());
  EXPECT_EQ(store.events("a", 5)->front().second.progress().step(), 2);
}

TEST(JobStore, Datasets) {
  testing::TempDir dir;
  auto opened = JobStore::open(dir.file("cpmd.db"));
  ASSERT_TRUE(opened.ok()) << opened.status();
  JobStore& store = **opened;
  for (int i = 0; i < 3; ++i) {
    JobStore::StoredDataset d;
    d.dataset.set_id("ds-" + std::to_string(i));
    d.dataset.set_name("n" + std::to_string(i));
    d.dataset.set_format(cpm::v1::DATASET_FORMAT_CSV);
    d.dataset.set_num_records(10 + i);
    d.dataset.mutable_create_time()->set_seconds(100 + i);
    d.dir = "/data/ds-" + std::to_string(i);
    d.dataset_file = "labels.csv";
    ASSERT_TRUE(store.insert_dataset(d).ok());
  }
  auto one = store.dataset("ds-1");
  ASSERT_TRUE(one.ok() && one->has_value());
  EXPECT_EQ((*one)->dataset.num_records(), 11);
  EXPECT_EQ((*one)->dataset.create_time().seconds(), 101);
  EXPECT_EQ((*one)->dir, "/data/ds-1");
  EXPECT_FALSE(store.dataset("ds-9")->has_value());
  int64_t total = 0;
  std::optional<JobStore::ListPosition> next;
  auto newest = store.datasets(std::nullopt, 2, &total, &next);
  ASSERT_EQ(newest->size(), 2u);
  EXPECT_EQ((*newest)[0].dataset.id(), "ds-2");
  EXPECT_EQ(total, 3);
  ASSERT_TRUE(next.has_value());
  auto rest = store.datasets(next, 2, &total, &next);
  ASSERT_EQ(rest->size(), 1u);
  EXPECT_EQ((*rest)[0].dataset.id(), "ds-0");
  EXPECT_FALSE(next.has_value());
}

}  // namespace
}  // namespace cpm::server
