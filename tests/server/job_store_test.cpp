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

}  // namespace
}  // namespace cpm::server
