// SPDX-License-Identifier: Apache-2.0
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "io/tokenizer.h"
#include "test_util.h"

namespace cpm::core::io {
namespace {

std::string run(const std::string& command) {
  std::string out;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) out.append(buf, n);
  pclose(pipe);
  return out;
}

// A small BPE model trained with Debian's spm_train, then our tokenizer against spm_encode (the
// reference command-line tool) on text it has and has not seen.
class SentencePieceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    std::ostringstream corpus;
    for (int i = 0; i < 400; ++i) {
      corpus << "\\frac { " << i << " } { x ^ " << (i % 7) << " } + \\sqrt { y _ " << i % 13
             << " } = \\alpha \\beta \\gamma\n"
             << "The quick brown fox " << i << " jumps over the lazy dog.\n";
    }
    const std::string input = dir_->write("corpus.txt", corpus.str());
    const std::string prefix = dir_->file("sp");
    run("spm_train --input=" + input + " --model_prefix=" + prefix +
        " --vocab_size=300 --model_type=bpe --character_coverage=1.0 --minloglevel=2 2>&1");
    model_ = prefix + ".model";
  }
  static void TearDownTestSuite() { delete dir_; }

  static testing::TempDir* dir_;
  static std::string model_;
};
testing::TempDir* SentencePieceTest::dir_ = nullptr;
std::string SentencePieceTest::model_;

TEST_F(SentencePieceTest, MatchesSpmEncode) {
  ASSERT_TRUE(std::ifstream(model_).good()) << "spm_train did not write " << model_;
  auto tokenizer = load_tokenizer(model_);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const std::vector<std::string> texts = {
      "\\frac { 3 } { x ^ 2 } + \\sqrt { y _ 5 }", "The quick brown fox jumps.",
      "unseen words: zebra quokka", "数学 公式", "  leading and  double  spaces"};
  const std::string input = dir_->write("texts.txt", [&] {
    std::string s;
    for (const auto& t : texts) s += t + "\n";
    return s;
  }());
  std::istringstream reference(run("spm_encode --model=" + model_ + " --output_format=id < " + input));
  for (const std::string& text : texts) {
    std::string line;
    ASSERT_TRUE(std::getline(reference, line)) << "spm_encode gave fewer lines";
    std::vector<int32_t> want;
    std::istringstream ids(line);
    for (int32_t id; ids >> id;) want.push_back(id);
    auto got = (*tokenizer)->encode(text);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(*got, want) << text;
    auto back = (*tokenizer)->decode(*got);
    ASSERT_TRUE(back.ok());
    // SentencePiece collapses runs of spaces and maps characters it never saw to <unk> (" ⁇ "),
    // so only the first two texts, made of seen characters, come back unchanged.
    if (&text - texts.data() < 2) {
      EXPECT_EQ(*back, text);
    }
  }
  EXPECT_EQ((*tokenizer)->vocab_size(), 300);
  EXPECT_TRUE((*tokenizer)->token_to_id("<unk>").has_value());
  EXPECT_TRUE((*tokenizer)->is_special(*(*tokenizer)->token_to_id("<unk>")));
  EXPECT_FALSE((*tokenizer)->token_to_id("no-such-piece-here").has_value());
  EXPECT_EQ((*tokenizer)->decode(std::vector<int32_t>{300}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(SentencePieceTest, LoadsFromACheckpointDirectoryAndRejectsGarbage) {
  testing::TempDir ckpt;
  std::ifstream src(model_, std::ios::binary);
  std::ofstream(ckpt.file("tokenizer.model"), std::ios::binary) << src.rdbuf();
  auto tokenizer = load_tokenizer(ckpt.path().string());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ((*tokenizer)->vocab_size(), 300);
  testing::TempDir bad;
  bad.write("tokenizer.model", "not a model");
  auto broken = load_tokenizer(bad.path().string());
  EXPECT_EQ(broken.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(broken.status().message(), ::testing::HasSubstr("not a SentencePiece model"));
}

}  // namespace
}  // namespace cpm::core::io
