// SPDX-License-Identifier: Apache-2.0
// `cpmctl dataset check` / `prepare` and the upload plan, on real formula images.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "common/sha256.h"
#include "dataset_check.h"
#include "dataset_prepare.h"
#include "dataset_upload.h"
#include "test_util.h"

namespace cpmctl {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

const std::string kFormulas = std::string(CPM_TEST_SOURCE_DIR) + "/tests/data/images/formulas";

std::vector<std::string> numbered(const CheckedDataset& d) {
  std::vector<std::string> out;
  for (const auto& b : d.bad) out.push_back(d.where(b.number) + ": " + b.reason);
  return out;
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

// A dataset folder: data/images/{a,b,c}.png and a labels CSV beside them.
class DatasetTools : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(dir_.path() / "data/images");
    for (const char* name : {"a", "b", "c", "d", "e"}) {
      fs::copy_file(kFormulas + "/1188.png", dir_.path() / "data/images" / (std::string(name) + ".png"));
    }
    csv_ = dir_.write("data/labels.csv",
                      "image_path,text\n"
                      "images/a.png,x^2\n"
                      "images/b.png,\"a, b\"\n"
                      "images/c.png,\\frac{1}{2}\n"
                      "images/d.png,y\n"
                      "images/e.png,z\n");
  }
  cpm::testing::TempDir dir_;
  std::string csv_;
};

TEST_F(DatasetTools, CheckListsEveryProblemWithItsRecord) {
  dir_.write("data/images/text.png", "this is not an image");
  const std::string jsonl = dir_.write(
      "data/d.jsonl",
      R"({"image": "images/a.png", "conversations": [{"role": "user", "content": "<image>"}, {"role": "assistant", "content": "ok"}]})" "\n"
      R"({"image": "images/none.png", "conversations": [{"role": "user", "content": "<image>"}, {"role": "assistant", "content": "x"}]})" "\n"
      R"({"image": "images/text.png", "conversations": [{"role": "user", "content": "<image>"}, {"role": "assistant", "content": "x"}]})" "\n"
      R"({"image": "images/a.png", "conversations": [{"role": "user", "content": "<image>"}, {"role": "assistant", "content": "  "}]})" "\n"
      R"({"image": "images/a.png", "conversations": [{"role": "user", "content": "<image>"}]})" "\n"
      "{not json\n"
      R"({"image": "../outside.png", "conversations": []})" "\n");
  auto checked = check_dataset(jsonl);
  ASSERT_TRUE(checked.ok()) << checked.status();
  EXPECT_EQ(checked->num_records, 7);
  EXPECT_EQ(checked->file.records.size(), 1u);
  const std::string images = fs::weakly_canonical(dir_.path() / "data/images").string();
  EXPECT_THAT(numbered(*checked),
              ElementsAre("line 2: missing image " + images + "/none.png",
                          "line 3: unreadable image " + images + "/text.png: not a PNG, JPEG, WebP, BMP or TIFF file",
                          "line 4: empty answer (turn 2)", "line 5: no assistant turn",
                          HasSubstr("line 6: not valid JSON"),
                          "line 7: image path ../outside.png leaves the dataset's folder"));
  EXPECT_THAT(checked->describe(), HasSubstr("6 of 7 records have problems"));

  // A JSON list numbers records by index; a broken list is an error of the whole file.
  auto list = check_dataset(dir_.write("data/l.json", R"([{"image": "images/a.png", "conversations": []}])"));
  ASSERT_TRUE(list.ok());
  EXPECT_THAT(numbered(*list), ElementsAre("index 0: empty \"conversations\" list"));
  EXPECT_TRUE(absl::IsInvalidArgument(check_dataset(dir_.write("data/x.json", "[{")).status()));
  EXPECT_TRUE(absl::IsNotFound(check_dataset(dir_.file("data/none.json")).status()));
}

TEST_F(DatasetTools, ImageSignatures) {
  EXPECT_TRUE(check_image_file(kFormulas + "/1188.png").ok());
  EXPECT_TRUE(check_image_file(dir_.write("j.jpg", "\xFF\xD8\xFF\xE0 rest")).ok());
  EXPECT_TRUE(check_image_file(dir_.write("w.webp", std::string("RIFF\x10\0\0\0WEBPVP8 ", 16))).ok());
  EXPECT_TRUE(check_image_file(dir_.write("t.tif", std::string("II*\0rest", 8))).ok());
  EXPECT_THAT(check_image_file(dir_.write("r.webp", std::string("RIFF\x10\0\0\0WAVEfmt ", 16))).message(),
              HasSubstr("not a PNG"));
  EXPECT_THAT(check_image_file(dir_.write("empty.png", "")).message(), HasSubstr("empty file"));
  EXPECT_THAT(check_image_file(dir_.file("none.png")).message(), HasSubstr("missing image"));
}

TEST_F(DatasetTools, PrepareWritesTheRecipeJsonSplitAsTheDaemonSplits) {
  PrepareOptions o;
  o.labels_csv = csv_;
  o.out_dir = dir_.file("data");
  o.eval_size = 2;
  o.seed = 5;
  auto r = prepare_dataset(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->train_records, 3);
  EXPECT_EQ(r->eval_records, 2);
  const auto train = read_json(r->train_json);
  const auto eval = read_json(r->eval_json);
  // The daemon's own split of 5 records with seed 5.
  auto expected_eval = train::eval_indices(5, {std::nullopt, 2, 5});
  ASSERT_TRUE(expected_eval.ok());
  std::vector<std::string> eval_ids;
  for (const auto& rec : eval) eval_ids.push_back(rec["id"]);
  EXPECT_EQ(eval_ids, (std::vector<std::string>{std::to_string((*expected_eval)[0]),
                                                  std::to_string((*expected_eval)[1])}));
  const auto& first = train[0];
  EXPECT_EQ(first["image"], "images/" + std::string(1, "abcde"[std::stoi(first["id"].get<std::string>())]) + ".png");
  EXPECT_EQ(first["conversations"][0]["role"], "user");
  EXPECT_EQ(first["conversations"][0]["content"], "<image>\n" + std::string(train::kDefaultCsvPrompt));
  EXPECT_EQ(first["conversations"][1]["role"], "assistant");

  // What prepare wrote is a dataset the daemon's rules accept, images included.
  auto checked = check_dataset(r->train_json);
  ASSERT_TRUE(checked.ok());
  EXPECT_TRUE(checked->bad.empty()) << checked->describe();
}

TEST_F(DatasetTools, PrepareResolvesImagesAgainstTheOutputFolder) {
  PrepareOptions o;
  o.labels_csv = csv_;
  o.eval_size = 0;
  // Above the images: the paths gain the folders in between.
  o.out_dir = dir_.path().string();
  auto r = prepare_dataset(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(read_json(r->train_json)[0]["image"], "data/images/a.png");
  EXPECT_EQ(read_json(r->eval_json).size(), 0u);

  // Beside them: refused, since the daemon would not read outside its folder...
  o.out_dir = dir_.file("out");
  auto refused = prepare_dataset(o);
  EXPECT_TRUE(absl::IsFailedPrecondition(refused.status()));
  EXPECT_THAT(refused.status().message(), HasSubstr("--copy-images"));
  EXPECT_FALSE(fs::exists(dir_.path() / "out"));
  // ...unless the images are copied in.
  o.copy_images = true;
  r = prepare_dataset(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->copied_images, 5);
  EXPECT_EQ(read_json(r->train_json)[1]["image"], "images/b.png");
  EXPECT_TRUE(fs::exists(dir_.path() / "out/images/b.png"));
  auto checked = check_dataset(r->train_json);
  ASSERT_TRUE(checked.ok());
  EXPECT_TRUE(checked->bad.empty()) << checked->describe();
}

TEST_F(DatasetTools, PrepareRefusesBadRecordsUnlessToldToSkipThem) {
  const std::string csv = dir_.write("data/bad.csv", "image_path,text\nimages/a.png,ok\nimages/zz.png,x\nimages/b.png,\n");
  PrepareOptions o;
  o.labels_csv = csv;
  o.out_dir = dir_.file("data");
  o.eval_size = 0;
  auto r = prepare_dataset(o);
  EXPECT_TRUE(absl::IsInvalidArgument(r.status()));
  EXPECT_THAT(r.status().message(), HasSubstr("line 3: missing image"));
  EXPECT_THAT(r.status().message(), HasSubstr("line 4: empty answer"));
  EXPECT_FALSE(fs::exists(dir_.path() / "data/train.json"));
  o.skip_bad_records = true;
  r = prepare_dataset(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->train_records, 1);
  EXPECT_EQ(r->skipped.size(), 2u);
  // Too large an eval split is a matter of the flags.
  o.eval_size = 1;
  EXPECT_TRUE(absl::IsFailedPrecondition(prepare_dataset(o).status()));
}

TEST_F(DatasetTools, UploadPlanAnnouncesEachFileOnceWithSizeAndChecksum) {
  fs::create_symlink("c.png", dir_.path() / "data/images/link.png");
  const std::string json = dir_.write(
      "data/train.json",
      R"([{"image": "images/a.png", "conversations": [{"role": "user", "content": "<image>"}, {"role": "assistant", "content": "x"}]},
          {"image": "./images/a.png", "conversations": [{"role": "user", "content": "<image>"}, {"role": "assistant", "content": "y"}]},
          {"image": {"<image_00>": "images/b.png", "<image_01>": "images/link.png"}, "conversations": [{"role": "user", "content": "<image_00><image_01>"}, {"role": "assistant", "content": "z"}]}])");
  auto plan = plan_upload(json, "", cpm::v1::DATASET_FORMAT_UNSPECIFIED, false);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->manifest.name(), "train.json");
  EXPECT_EQ(plan->manifest.dataset_file(), "train.json");
  EXPECT_EQ(plan->num_records, 3);
  std::vector<std::string> paths;
  int64_t total = 0;
  for (int i = 0; i < plan->manifest.files_size(); ++i) {
    const auto& f = plan->manifest.files(i);
    paths.push_back(f.path());
    EXPECT_EQ(f.size_bytes(), static_cast<int64_t>(fs::file_size(plan->local_paths[i])));
    EXPECT_EQ(f.sha256(), *cpm::core::sha256_file(plan->local_paths[i]));
    total += f.size_bytes();
  }
  // The symlink travels under its own name: the record names it so.
  EXPECT_THAT(paths, ElementsAre("train.json", "images/a.png", "images/b.png", "images/link.png"));
  EXPECT_EQ(plan->total_bytes, total);
}

TEST_F(DatasetTools, UploadPlanRefusesBadRecordsOrLeavesTheirImagesOut) {
  const std::string csv = dir_.write("data/bad.csv", "image_path,text\nimages/a.png,ok\nimages/zz.png,x\n");
  auto plan = plan_upload(csv, "mine", cpm::v1::DATASET_FORMAT_CSV, false);
  EXPECT_TRUE(absl::IsInvalidArgument(plan.status()));
  EXPECT_THAT(plan.status().message(), HasSubstr("line 3: missing image"));
  plan = plan_upload(csv, "mine", cpm::v1::DATASET_FORMAT_CSV, true);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->manifest.name(), "mine");
  EXPECT_EQ(plan->manifest.files_size(), 2);
  EXPECT_THAT(plan->skipped, ElementsAre(HasSubstr("line 3: missing image")));
}

}  // namespace
}  // namespace cpmctl
