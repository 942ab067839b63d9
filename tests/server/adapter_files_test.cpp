// SPDX-License-Identifier: Apache-2.0
#include "adapter_files.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "test_util.h"

namespace cpm::server {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class AdapterRootsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* d : {"roots/a/good", "roots/b/other", "outside/secret"}) {
      fs::create_directories(tmp_.path() / d);
    }
    tmp_.write("roots/a/file.txt", "x");
    fs::create_directory_symlink(tmp_.path() / "outside" / "secret",
                                 tmp_.path() / "roots/a/escape");
    fs::create_directory_symlink(tmp_.path() / "roots/b/other", tmp_.path() / "roots/a/sideways");
    auto roots = adapter_path_roots({tmp_.file("roots/a"), tmp_.file("roots/b")});
    ASSERT_TRUE(roots.ok()) << roots.status();
    roots_ = std::make_unique<PathRoots>(*roots);
  }

  std::string canonical(const std::string& rel) const {
    return fs::canonical(tmp_.path() / rel).string();
  }

  testing::TempDir tmp_;
  std::unique_ptr<PathRoots> roots_;
};

TEST_F(AdapterRootsTest, FoldersUnderARootResolve) {
  EXPECT_EQ(*roots_->resolve(tmp_.file("roots/a/good")), canonical("roots/a/good"));
  EXPECT_EQ(*roots_->resolve("good"), canonical("roots/a/good"));  // relative to the first root
  EXPECT_EQ(*roots_->resolve(tmp_.file("roots/b/other")), canonical("roots/b/other"));
  // A symlink is fine when its target is under a root too.
  EXPECT_EQ(*roots_->resolve("sideways"), canonical("roots/b/other"));
  EXPECT_EQ(*roots_->resolve("good/../good/"), canonical("roots/a/good"));
}

TEST_F(AdapterRootsTest, EverythingOutsideIsPermissionDenied) {
  for (const std::string& path :
       {tmp_.file("outside/secret"), std::string("escape"), std::string("../../outside/secret"),
        std::string("/etc"), tmp_.file("roots/a/../../outside/secret"), tmp_.file("roots"),
        std::string("../a-sibling")}) {
    auto r = roots_->resolve(path);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kPermissionDenied) << path;
    EXPECT_THAT(r.status().message(), HasSubstr("is outside the adapter roots")) << path;
  }
}

TEST_F(AdapterRootsTest, MissingOrNotAFolderIsInvalid) {
  EXPECT_EQ(roots_->resolve("").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(roots_->resolve("nope").status().message(), HasSubstr("is not a directory"));
  EXPECT_EQ(roots_->resolve("file.txt").status().code(), absl::StatusCode::kInvalidArgument);
}

// The same confinement for files (dataset_roots and JobSpec.dataset_path).
TEST_F(AdapterRootsTest, FilePathsResolveInsideAndAreRefusedOutside) {
  tmp_.write("outside/labels.csv", "x");
  fs::create_symlink(tmp_.path() / "outside" / "labels.csv", tmp_.path() / "roots/a/link.csv");
  auto files = PathRoots::create({tmp_.file("roots/a")}, {"spec.dataset_path", "dataset", "dataset_roots",
                                                          "upload it instead", /*directory=*/false, ""});
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_EQ(*files->resolve("file.txt"), canonical("roots/a/file.txt"));
  EXPECT_EQ(*files->resolve(tmp_.file("roots/a/file.txt")), canonical("roots/a/file.txt"));
  for (const std::string& path : {tmp_.file("outside/labels.csv"), std::string("link.csv"),
                                  std::string("../../outside/labels.csv"), std::string("../outside/missing.csv")}) {
    auto r = files->resolve(path);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kPermissionDenied) << path;
    EXPECT_THAT(r.status().message(), HasSubstr("is outside the dataset roots")) << path;
    EXPECT_THAT(r.status().message(), HasSubstr("upload it instead")) << path;
  }
  EXPECT_EQ(files->resolve("missing.csv").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(files->resolve("good").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(files->resolve("good").status().message(), HasSubstr("spec.dataset_path good is not a file"));
  EXPECT_EQ(files->resolve("").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(AdapterRootsTest, RootsMustExistAndNoRootsRefuseEveryPath) {
  auto bad = adapter_path_roots({tmp_.file("missing")});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(bad.status().message(), HasSubstr("missing is not a directory"));
  auto none = adapter_path_roots({});
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->resolve("x").status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(none->resolve(tmp_.file("roots/a/good")).status().code(),
            absl::StatusCode::kPermissionDenied);
}

TEST(AdapterFiles, ListsRegularFilesByNameWithoutSymlinks) {
  testing::TempDir tmp;
  tmp.write("outside.txt", "secret");
  fs::create_directories(tmp.path() / "peft" / "sub");
  tmp.write("peft/adapter_model.safetensors", std::string(1000, 'w'));
  tmp.write("peft/adapter_config.json", "{}");
  fs::create_symlink(tmp.path() / "outside.txt", tmp.path() / "peft" / "link.txt");
  auto files = list_adapter_files(tmp.file("peft"));
  ASSERT_TRUE(files.ok()) << files.status();
  ASSERT_EQ(files->size(), 2u);
  EXPECT_EQ((*files)[0].name, "adapter_config.json");
  EXPECT_EQ((*files)[0].size_bytes, 2);
  EXPECT_EQ((*files)[1].name, "adapter_model.safetensors");
  EXPECT_EQ((*files)[1].path, tmp.file("peft/adapter_model.safetensors"));
  EXPECT_EQ((*files)[1].size_bytes, 1000);
  EXPECT_EQ(list_adapter_files(tmp.file("gone")).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace cpm::server
