// SPDX-License-Identifier: Apache-2.0
#include "io/atomic_file.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "test_util.h"

namespace cpm::core::io {
namespace {

namespace fs = std::filesystem;

std::string read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(AtomicFile, WritesReplaceWholeFilesAndLeaveNoTemporaries) {
  testing::TempDir dir;
  const std::string path = dir.file("state.json");
  ASSERT_TRUE(write_file_atomic(path, "first").ok());
  ASSERT_TRUE(write_file_atomic(path, "second").ok());
  EXPECT_EQ(read(path), "second");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
}

TEST(AtomicFile, AStagedFolderAppearsWholeAndNeverOverAnExistingOne) {
  testing::TempDir dir;
  const std::string target = dir.file("adapter");
  auto staged = staging_directory(target);
  ASSERT_TRUE(staged.ok()) << staged.status();
  std::ofstream(fs::path(*staged) / "a.bin") << "bytes";
  EXPECT_FALSE(fs::exists(target));
  ASSERT_TRUE(publish_directory(*staged, target).ok());
  EXPECT_EQ(read((fs::path(target) / "a.bin").string()), "bytes");
  EXPECT_FALSE(fs::exists(*staged));
  auto again = staging_directory(target);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(publish_directory(*again, target).code(), absl::StatusCode::kAlreadyExists);
}

TEST(AtomicFile, StaleStagingLeftByACrashIsRemovedAndNothingElse) {
  testing::TempDir dir;
  fs::create_directories(dir.path() / ".ds-1.tmp.123.0" / "images");  // an upload cut short
  dir.write(".labels.csv.tmp.77.3", "half");                          // a file write cut short
  fs::create_directories(dir.path() / "ds-2");                         // a published upload
  dir.write(".hidden", "kept");
  dir.write("x.tmp.1.2", "kept: not a staging name");
  EXPECT_EQ(remove_stale_staging(dir.path().string()), 2);
  EXPECT_FALSE(fs::exists(dir.path() / ".ds-1.tmp.123.0"));
  EXPECT_FALSE(fs::exists(dir.path() / ".labels.csv.tmp.77.3"));
  EXPECT_TRUE(fs::exists(dir.path() / "ds-2"));
  EXPECT_TRUE(fs::exists(dir.path() / ".hidden"));
  EXPECT_TRUE(fs::exists(dir.path() / "x.tmp.1.2"));
  EXPECT_EQ(remove_stale_staging(dir.file("missing")), 0);
}

}  // namespace
}  // namespace cpm::core::io
