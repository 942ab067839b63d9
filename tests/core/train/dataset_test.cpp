// SPDX-License-Identifier: Apache-2.0
#include "train/dataset.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "core/train/train_data_util.h"
#include "test_util.h"

namespace cpm::core::train {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::builder;

const std::string kFormulas = std::string(CPM_TEST_SOURCE_DIR) + "/tests/data/images/formulas";

// A dataset folder with two formula images in images/.
class DatasetDir : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(dir_.path() / "images");
    fs::copy_file(kFormulas + "/1188.png", dir_.path() / "images/a.png");
    fs::copy_file(kFormulas + "/1378.png", dir_.path() / "images/b.png");
  }
  std::string real(const std::string& relative) const {
    return fs::weakly_canonical(dir_.path() / relative).string();
  }
  cpm::testing::TempDir dir_;
};

std::vector<std::string> numbered(const std::vector<BadRecord>& bad) {
  std::vector<std::string> out;
  for (const BadRecord& b : bad) out.push_back(std::to_string(b.number) + ": " + b.reason);
  return out;
}

TEST_F(DatasetDir, CsvQuotingLinesAndTheDefaultQuestion) {
  // BOM, CRLF, a quoted field with commas and "", and one spanning two lines.
  const std::string path = dir_.write(
      "labels.csv",
      "\xEF\xBB\xBFimage_path,text\r\n"
      "images/a.png,\"x , y\"\r\n"
      "images/b.png,\"say \"\"hi\"\"\"\r\n"
      "images/a.png,\"two\nlines\"\r\n"
      "\r\n"
      "images/b.png,plain\r\n");
  auto file = read_dataset(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->numbering, RecordNumbering::kLine);
  EXPECT_TRUE(file->bad.empty());
  ASSERT_EQ(file->records.size(), 4u);
  std::vector<int64_t> lines;
  std::vector<std::string> answers;
  for (const DatasetRecord& r : file->records) {
    lines.push_back(r.number);
    answers.push_back(r.conversation.turns.at(1).content);
  }
  EXPECT_THAT(lines, ElementsAre(2, 3, 4, 7));
  EXPECT_THAT(answers, ElementsAre("x , y", "say \"hi\"", "two\nlines", "plain"));
  const Conversation& c = file->records[0].conversation;
  ASSERT_EQ(c.images.size(), 1u);
  EXPECT_EQ(c.images[0].tag, "<image>");
  EXPECT_EQ(c.images[0].path, real("images/a.png"));
  EXPECT_EQ(c.turns[0].role, "user");
  EXPECT_EQ(c.turns[0].content, "<image>\n" + std::string(kDefaultCsvPrompt));
  EXPECT_EQ(c.turns[1].role, "assistant");

  ReadOptions custom;
  custom.csv_prompt = "LaTeX?";
  auto other = read_dataset(path, custom);
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(other->records[0].conversation.turns[0].content, "<image>\nLaTeX?");
}

TEST_F(DatasetDir, CsvHeaderAndFieldCount) {
  EXPECT_THAT(read_dataset(dir_.write("h.csv", "path,label\nimages/a.png,x\n")).status().message(),
              HasSubstr("must name the columns image_path and text"));
  // Columns in another order, an extra column, a short row and an unterminated quote.
  auto file = read_dataset(dir_.write(
      "f.csv", "text,extra,image_path\nx,1,images/a.png\ny,images/b.png\n\"z,2,images/a.png\n"));
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ(file->records.size(), 1u);
  EXPECT_EQ(file->records[0].conversation.turns[1].content, "x");
  EXPECT_THAT(numbered(file->bad), ElementsAre("3: expected 3 fields, found 2",
                                               "4: unterminated quoted field (it runs to the end of the file)"));
}

TEST_F(DatasetDir, JsonListAndJsonLines) {
  const std::string record =
      R"({"id": "r1", "image": {"<image_01>": "images/b.png", "<image_00>": "images/a.png"},)"
      R"( "conversations": [{"role": "user", "content": "<image_00> <image_01>"},)"
      R"( {"role": "assistant", "content": "x"}]})";
  auto list = read_dataset(dir_.write("d.json", "[" + record + ", 7]"));
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_EQ(list->numbering, RecordNumbering::kIndex);
  ASSERT_EQ(list->records.size(), 1u);
  const DatasetRecord& r = list->records[0];
  EXPECT_EQ(r.number, 0);
  EXPECT_EQ(r.id, "r1");
  // Keys keep their file order, as the recipe's dict does.
  ASSERT_EQ(r.conversation.images.size(), 2u);
  EXPECT_EQ(r.conversation.images[0].tag, "<image_01>");
  EXPECT_EQ(r.conversation.images[0].path, real("images/b.png"));
  EXPECT_THAT(numbered(list->bad), ElementsAre("1: not a JSON object"));

  auto lines = read_dataset(dir_.write("d.jsonl", "\n" + record + "\n{oops\n"));
  ASSERT_TRUE(lines.ok()) << lines.status();
  EXPECT_EQ(lines->numbering, RecordNumbering::kLine);
  ASSERT_EQ(lines->records.size(), 1u);
  EXPECT_EQ(lines->records[0].number, 2);
  ASSERT_EQ(lines->bad.size(), 1u);
  EXPECT_EQ(lines->bad[0].number, 3);
  EXPECT_THAT(lines->bad[0].reason, HasSubstr("not valid JSON"));

  EXPECT_THAT(read_dataset(dir_.write("o.json", "[{\"a\": 1")).status().message(), HasSubstr("not valid JSON"));
  EXPECT_THAT(read_dataset(dir_.write("x.txt", "")).status().message(), HasSubstr("use .json, .jsonl or .csv"));
  EXPECT_TRUE(absl::IsNotFound(read_dataset(dir_.file("none.csv")).status()));
}

TEST_F(DatasetDir, ImagePathsStayInsideTheDatasetFolder) {
  fs::create_symlink(kFormulas + "/1188.png", dir_.path() / "images/outside.png");
  fs::create_symlink("a.png", dir_.path() / "images/inside.png");
  auto file = read_dataset(dir_.write("p.csv",
                                      "image_path,text\n"
                                      "../etc/passwd,x\n"
                                      "/etc/passwd,x\n"
                                      "images/outside.png,x\n"
                                      "images/../images/inside.png,x\n"
                                      "images/missing.png,x\n"
                                      ",x\n"));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_THAT(numbered(file->bad),
              ElementsAre("2: image path ../etc/passwd leaves the dataset's folder",
                          "3: image path /etc/passwd is absolute; give it relative to the dataset's folder",
                          HasSubstr("4: image path images/outside.png leads outside the dataset's folder"),
                          "7: empty image path"));
  ASSERT_EQ(file->records.size(), 2u);
  EXPECT_EQ(file->records[0].conversation.images[0].path, real("images/a.png"));  // symlink resolved
  EXPECT_EQ(file->records[1].conversation.images[0].path, real("images/missing.png"));

  // Unresolved (what an upload names the files by): the path as given, normalized; the same
  // records are refused.
  ReadOptions as_named;
  as_named.resolve_symlinks = false;
  auto named = read_dataset(dir_.file("p.csv"), as_named);
  ASSERT_TRUE(named.ok()) << named.status();
  EXPECT_EQ(numbered(named->bad), numbered(file->bad));
  ASSERT_EQ(named->records.size(), 2u);
  EXPECT_EQ(named->records[0].conversation.images[0].path, real("images") + "/inside.png");
}

// Every kind of bad record, each reported with its line.
TEST_F(DatasetDir, ValidationReportsEveryBadRecordWithItsNumber) {
  dir_.write("images/broken.png", "\x89PNG\r\n\x1a\n truncated");
  std::string long_question;
  for (int i = 0; i < 300; ++i) long_question += " word";
  const std::string path = dir_.write(
      "d.jsonl",
      R"({"image": "images/a.png", "conversations": [{"role": "user", "content": "<image>"}, {"role": "assistant", "content": "good"}]})" "\n"
      R"({"image": "images/none.png", "conversations": [{"role": "user", "content": "<image>"}, {"role": "assistant", "content": "x"}]})" "\n"
      R"({"image": "images/broken.png", "conversations": [{"role": "user", "content": "<image>"}, {"role": "assistant", "content": "x"}]})" "\n"
      R"({"image": "images/a.png", "conversations": [{"role": "user", "content": "<image>"}, {"role": "assistant", "content": ""}]})" "\n"
      R"({"image": "images/a.png", "conversations": [{"role": "user", "content": "<image>"}]})" "\n"
      R"({"image": "images/a.png", "conversations": [{"role": "assistant", "content": "x"}]})" "\n"
      R"({"image": {"<image_00>": "images/a.png", "<image_01>": "images/b.png"}, "conversations": [{"role": "user", "content": "<image_00>"}, {"role": "assistant", "content": "x"}]})" "\n"
      R"({"image": "images/a.png", "conversations": [{"role": "user", "content": "<image>)" +
          long_question + R"("}, {"role": "assistant", "content": "x"}]})" "\n"
      R"({"conversations": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "x"}]})" "\n"
      R"({"image": "images/b.png", "conversations": [{"role": "user", "content": "<image>"}, {"role": "assistant", "content": "good too"}]})" "\n");
  auto file = read_dataset(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const ValidationReport report = validate_dataset(std::move(*file), builder({.model_max_length = 120}));
  EXPECT_EQ(report.num_records, 10);
  ASSERT_EQ(report.good.size(), 2u);
  EXPECT_EQ(report.good[0].number, 1);
  EXPECT_EQ(report.good[1].number, 10);
  EXPECT_THAT(numbered(report.bad),
              ElementsAre("2: missing image " + real("images/none.png"),
                          HasSubstr("3: unreadable image " + real("images/broken.png")),
                          "4: empty answer (turn 2)", "5: no assistant turn", "6: no user turn",
                          HasSubstr("7: placeholder/image count mismatch: image <image_01> is referenced 0 times"),
                          HasSubstr("8: too long: "), "9: no image"));

  const absl::Status fail = check_bad_records(report, /*skip_bad_records=*/false);
  EXPECT_TRUE(absl::IsInvalidArgument(fail));
  EXPECT_THAT(fail.message(), HasSubstr("8 of 10 records are bad"));
  EXPECT_THAT(fail.message(), HasSubstr("\n  line 2: missing image"));
  EXPECT_THAT(fail.message(), HasSubstr("\n  line 9: no image"));
  EXPECT_THAT(check_bad_records(report, false, 3).message(), HasSubstr("\n  ... and 5 more"));
  EXPECT_TRUE(check_bad_records(report, /*skip_bad_records=*/true).ok());
}

TEST_F(DatasetDir, LoadSkipsAndCountsOrFails) {
  std::string csv = "image_path,text\n";
  for (int i = 0; i < 40; ++i) csv += (i % 10 == 3 ? "images/gone.png,x\n" : "images/a.png,y\n");
  const std::string path = dir_.write("many.csv", csv);
  DataOptions options;
  EXPECT_THAT(load_dataset(path, builder(), options).status().message(), HasSubstr("4 of 40 records are bad"));
  options.skip_bad_records = true;
  options.split.eval_size = 6;
  auto loaded = load_dataset(path, builder(), options);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->num_records, 40);
  EXPECT_EQ(loaded->skipped.size(), 4u);
  EXPECT_EQ(loaded->skipped[0].number, 5);  // line of the 4th row
  EXPECT_EQ(loaded->split.eval.size(), 6u);
  EXPECT_EQ(loaded->split.train.size(), 30u);

  const std::string all_bad = dir_.write("bad.csv", "image_path,text\nimages/gone.png,x\n");
  EXPECT_THAT(load_dataset(all_bad, builder(), options).status().message(), HasSubstr("1 of 1 records are bad"));
}

TEST(Split, SeededAndTheSameEverywhere) {
  // An independent Python splitmix64 + Fisher-Yates gives these.
  SplitOptions o{.eval_size = 5};
  EXPECT_THAT(*eval_indices(20, o), ElementsAre(3, 8, 11, 16, 17));
  o.seed = 7;
  EXPECT_THAT(*eval_indices(20, o), ElementsAre(1, 2, 4, 15, 16));
  EXPECT_THAT(*eval_indices(100, SplitOptions{}), ElementsAre(1, 14, 65, 91, 99));  // 5% by default
  EXPECT_EQ(*eval_indices(20, o), *eval_indices(20, o));
}

TEST(Split, Sizes) {
  auto count = [](size_t n, SplitOptions o) { return eval_indices(n, o)->size(); };
  EXPECT_EQ(count(100, {}), 5u);
  EXPECT_EQ(count(20000, {}), 500u);  // the default caps at 500
  EXPECT_EQ(count(20000, {.eval_fraction = 0.05}), 1000u);  // an explicit fraction does not
  EXPECT_EQ(count(60, {.eval_fraction = 0.05}), 3u);  // 0.05 * 60 = 3.0000000000000004
  EXPECT_EQ(count(30, {}), 2u);  // ceil(1.5)
  EXPECT_EQ(count(1, {}), 0u);  // never the last record
  EXPECT_EQ(count(2, {.eval_fraction = 0.9}), 1u);
  EXPECT_EQ(count(10, {.eval_size = 0}), 0u);
  EXPECT_EQ(count(10, {.eval_size = 9}), 9u);
  EXPECT_EQ(count(0, {}), 0u);
  EXPECT_FALSE(eval_indices(10, {.eval_size = 10}).ok());
  EXPECT_FALSE(eval_indices(10, {.eval_size = -1}).ok());
  EXPECT_FALSE(eval_indices(10, {.eval_fraction = 1.0}).ok());
  EXPECT_FALSE(eval_indices(10, {.eval_fraction = -0.1}).ok());
  EXPECT_THAT(eval_indices(10, {.eval_fraction = 0.1, .eval_size = 1}).status().message(), HasSubstr("not both"));

  std::vector<DatasetRecord> records(20);
  for (int i = 0; i < 20; ++i) records[static_cast<size_t>(i)].number = 100 + i;
  auto split = split_dataset(records, {.eval_size = 5});
  ASSERT_TRUE(split.ok());
  std::vector<int64_t> eval, train;
  for (const auto& r : split->eval) eval.push_back(r.number);
  for (const auto& r : split->train) train.push_back(r.number);
  EXPECT_THAT(eval, ElementsAre(103, 108, 111, 116, 117));
  EXPECT_EQ(train.size(), 15u);
  EXPECT_TRUE(std::is_sorted(train.begin(), train.end()));
  std::set<int64_t> all(eval.begin(), eval.end());
  all.insert(train.begin(), train.end());
  EXPECT_EQ(all.size(), 20u);
}

// The real LaTeX_OCR validation labels (quoted fields with commas), when the shared data is here.
TEST(RealData, LatexOcrLabelsCsv) {
  const std::string path = std::string(CPM_TEST_SOURCE_DIR) + "/../shared/data/latex_ocr_full_val/labels.csv";
  if (!fs::exists(path)) GTEST_SKIP() << path << " is absent";
  auto file = read_dataset(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_TRUE(file->bad.empty()) << file->bad.front().reason;
  ASSERT_EQ(file->records.size(), 8475u);
  EXPECT_EQ(file->records[1].number, 3);
  EXPECT_THAT(file->records[1].conversation.turns[1].content, HasSubstr("( p ) , { \\bar { K } }"));
  file->records.resize(40);
  const ValidationReport report = validate_dataset(std::move(*file), builder());
  EXPECT_TRUE(report.bad.empty()) << report.describe();
  EXPECT_EQ(report.good.size(), 40u);
}

}  // namespace
}  // namespace cpm::core::train
