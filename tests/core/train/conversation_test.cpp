// SPDX-License-Identifier: Apache-2.0
#include "train/conversation.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include "core/train/train_data_util.h"
#include "nlohmann/json.hpp"
#include "test_util.h"
#include "train/collator.h"

namespace cpm::core::train {
namespace {

using ::testing::HasSubstr;
using testing::builder;
using testing::id_of;
using Json = nlohmann::ordered_json;

const std::string kRoot = CPM_TEST_SOURCE_DIR;
const std::string kFormula = kRoot + "/tests/data/images/formulas/1188.png";  // 240x40, unsliced
const std::string kWide = kRoot + "/tests/data/train/images/wide_formula.png";  // 1100x220, sliced

Conversation one_image(const std::string& path, std::vector<io::ChatMessage> turns) {
  return {{{"<image>", path}}, std::move(turns)};
}

const Json& goldens() {
  static const Json doc = [] {
    std::ifstream in(kRoot + "/tests/data/train/conversation_goldens.json");
    return Json::parse(in);
  }();
  return doc;
}

Conversation conversation_of(const Json& c) {
  Conversation conv;
  if (c["image"].is_string()) {
    conv.images.push_back({"<image>", kRoot + "/" + c["image"].get<std::string>()});
  } else {
    for (const auto& [tag, path] : c["image"].items()) {
      conv.images.push_back({tag, kRoot + "/" + path.get<std::string>()});
    }
  }
  for (const Json& t : c["conversations"]) {
    conv.turns.push_back({t["role"].get<std::string>(), t["content"].get<std::string>()});
  }
  return conv;
}

ExampleOptions options_of(const Json& c) {
  return {.model_max_length = c["model_max_length"].get<int64_t>(),
          .max_slice_nums = c["max_slice_nums"].get<int>()};
}

// The recipe's own finetune/dataset.py (see make_conversation_goldens.py for the exact copy, the
// shims and the versions) on the same records: ids, labels, positions, bounds and tgt_sizes equal,
// pixels within 1e-6 at 64 points per strip and in their sums.
TEST(ConversationGoldens, EqualTheRecipesOwnPreprocess) {
  const Json& cases = goldens()["cases"];
  ASSERT_GE(cases.size(), 8u);
  for (const Json& c : cases) {
    SCOPED_TRACE(c["name"].get<std::string>());
    const ExampleBuilder b = builder(options_of(c));
    const Conversation conv = conversation_of(c);
    auto example = b.build(conv);
    ASSERT_TRUE(example.ok()) << example.status();
    EXPECT_EQ(example->input_ids, c["input_ids"].get<std::vector<int32_t>>());
    EXPECT_EQ(example->labels, c["labels"].get<std::vector<int32_t>>());
    EXPECT_EQ(example->position_ids, c["position_ids"].get<std::vector<int64_t>>());
    std::vector<std::vector<int64_t>> bounds, tgt;
    for (const auto& [s, e] : example->image_bound) bounds.push_back({s, e});
    for (const auto& t : example->tgt_sizes) tgt.push_back({t[0], t[1]});
    EXPECT_EQ(bounds, c["image_bound"].get<std::vector<std::vector<int64_t>>>());
    EXPECT_EQ(tgt, c["tgt_sizes"].get<std::vector<std::vector<int64_t>>>());
    EXPECT_EQ(example->truncated,
              static_cast<int64_t>(example->input_ids.size()) == c["model_max_length"].get<int64_t>());

    const Json& pixels = c["pixels"];
    ASSERT_EQ(example->pixel_values.size(), pixels.size());
    for (size_t k = 0; k < pixels.size(); ++k) {
      const at::Tensor strip = example->pixel_values[k];
      ASSERT_EQ(strip.sizes().vec(), pixels[k]["shape"].get<std::vector<int64_t>>()) << k;
      const at::Tensor flat = strip.reshape({-1});
      const float* v = flat.data_ptr<float>();
      for (const Json& sample : pixels[k]["samples"]) {
        const auto i = sample[0].get<int64_t>();
        EXPECT_NEAR(v[i], sample[1].get<double>(), 1e-6) << "strip " << k << " index " << i;
      }
      const at::Tensor d = flat.to(at::kDouble);
      EXPECT_NEAR(d.sum().item<double>(), pixels[k]["sum"].get<double>(), 1e-4) << k;
      EXPECT_NEAR(d.mul(d).sum().item<double>(), pixels[k]["sum_sq"].get<double>(), 1e-4) << k;
    }
    EXPECT_TRUE(b.check(conv).ok()) << b.check(conv);
  }
}

// The recipe's data_collator on examples of three cases, untrimmed and trimmed.
TEST(ConversationGoldens, CollatorEqualsTheRecipes) {
  std::map<std::string, const Json*> by_name;
  for (const Json& c : goldens()["cases"]) by_name[c["name"].get<std::string>()] = &c;
  for (const Json& batch : goldens()["collator"]) {
    std::vector<TrainingExample> examples;
    for (const Json& name : batch["cases"]) {
      const Json& c = *by_name.at(name.get<std::string>());
      auto e = builder(options_of(c)).build(conversation_of(c));
      ASSERT_TRUE(e.ok()) << e.status();
      examples.push_back(std::move(*e));
    }
    const Batch out = collate(examples, batch["max_length"].get<int64_t>());
    auto rows = [](const at::Tensor& t) {
      std::vector<std::vector<int64_t>> r(static_cast<size_t>(t.size(0)));
      const at::Tensor l = t.to(at::kLong).contiguous();
      for (int64_t b = 0; b < t.size(0); ++b) {
        r[static_cast<size_t>(b)].assign(l[b].data_ptr<int64_t>(), l[b].data_ptr<int64_t>() + t.size(1));
      }
      return r;
    };
    using Rows = std::vector<std::vector<int64_t>>;
    EXPECT_EQ(rows(out.input_ids), batch["input_ids"].get<Rows>());
    EXPECT_EQ(rows(out.labels), batch["labels"].get<Rows>());
    EXPECT_EQ(rows(out.position_ids), batch["position_ids"].get<Rows>());
    EXPECT_EQ(rows(out.attention_mask), batch["attention_mask"].get<Rows>());
  }
}

TEST(Conversation, LabelsArePreShiftedOverTheAnswerAndItsEnd) {
  const auto e = builder().build(one_image(kFormula, {{"user", "<image>\nOCR"}, {"assistant", "x ^ 2"}}));
  ASSERT_TRUE(e.ok()) << e.status();
  const auto& ids = e->input_ids;
  const auto& labels = e->labels;
  ASSERT_EQ(labels.size(), ids.size());
  // ... <|im_start|> assistant \n x ^ 2 <|im_end|> \n
  const size_t n = ids.size();
  ASSERT_EQ(ids[n - 1], 198);
  ASSERT_EQ(ids[n - 2], id_of("<|im_end|>"));
  size_t a = n;
  while (a > 0 && ids[a - 1] != id_of("assistant")) --a;
  const size_t assistant = a - 1;
  ASSERT_EQ(ids[assistant - 1], id_of("<|im_start|>"));
  EXPECT_EQ(labels[assistant], 198);  // "assistant" predicts the "\n"
  for (size_t i = assistant + 1; i + 2 < n; ++i) EXPECT_EQ(labels[i], ids[i + 1]) << i;
  EXPECT_EQ(labels[n - 2], id_of("<|im_end|>"));  // the <|im_end|> position predicts eos again
  EXPECT_EQ(labels[n - 1], kIgnoreIndex);
  for (size_t i = 0; i < assistant; ++i) ASSERT_EQ(labels[i], kIgnoreIndex) << i;
  EXPECT_EQ(e->position_ids.back(), static_cast<int64_t>(n) - 1);
  ASSERT_EQ(e->image_bound.size(), 1u);
  EXPECT_EQ(e->image_bound[0].second - e->image_bound[0].first, 64);
  EXPECT_FALSE(e->truncated);
}

TEST(Conversation, AnImageWithoutATagGoesFirstFollowedByANewline) {
  const auto tagged = builder().build(one_image(kFormula, {{"user", "<image>\nOCR"}, {"assistant", "x"}}));
  const auto untagged = builder().build(one_image(kFormula, {{"user", "OCR"}, {"assistant", "x"}}));
  ASSERT_TRUE(tagged.ok() && untagged.ok());
  EXPECT_EQ(tagged->input_ids, untagged->input_ids);
  EXPECT_EQ(tagged->labels, untagged->labels);
}

TEST(Conversation, OnlySlicedImagesGetAnImageIdNumberedAmongThemselves) {
  const int32_t image_id = id_of("<image_id>");
  auto count = [&](const std::vector<int32_t>& ids) { return std::count(ids.begin(), ids.end(), image_id); };
  const auto unsliced = builder().build(one_image(kFormula, {{"user", "<image>"}, {"assistant", "x"}}));
  const auto sliced = builder().build(one_image(kWide, {{"user", "<image>"}, {"assistant", "x"}}));
  ASSERT_TRUE(unsliced.ok() && sliced.ok());
  EXPECT_EQ(count(unsliced->input_ids), 0);
  EXPECT_EQ(count(sliced->input_ids), 1);
  EXPECT_EQ(sliced->image_bound.size(), 4u);  // source + [3, 1] slices
  // Unsliced, sliced, sliced: the ids read 0 and 1.
  const Conversation three{{{"<image_00>", kFormula}, {"<image_01>", kWide}, {"<image_02>", kWide}},
                           {{"user", "<image_00><image_01><image_02>"}, {"assistant", "x"}}};
  const auto e = builder().build(three);
  ASSERT_TRUE(e.ok()) << e.status();
  const auto text = testing::minicpm_tokenizer().decode(e->input_ids);
  ASSERT_TRUE(text.ok());
  EXPECT_THAT(*text, HasSubstr("<image_id>0</image_id><image>"));
  EXPECT_THAT(*text, HasSubstr("<image_id>1</image_id><image>"));
  EXPECT_EQ(text->find("<image_id>2"), std::string::npos);
  EXPECT_EQ(e->image_bound.size(), 9u);
  EXPECT_EQ(e->pixel_values.size(), 9u);
}

// Every way a record can be unusable, with the reason; check() agrees with build().
TEST(Conversation, RejectsWhatTheRecipeCannotTrainOn) {
  cpm::testing::TempDir dir;
  const std::string garbage = dir.write("garbage.png", "not an image");
  const std::string missing = dir.file("missing.png");
  struct Case {
    Conversation conversation;
    std::string reason;
    ExampleOptions options = {};
  };
  const std::vector<Case> cases = {
      {one_image(kFormula, {{"assistant", "x"}}), "no user turn"},
      {one_image(kFormula, {{"user", "<image>"}}), "no assistant turn"},
      {one_image(kFormula, {{"user", "<image>"}, {"assistant", " \n"}}), "empty answer (turn 2)"},
      {one_image(kFormula, {{"assistant", "x"}, {"user", "<image>"}}), "first turn must be the user's"},
      {one_image(kFormula, {{"system", "s"}, {"user", "<image>"}, {"assistant", "x"}}), "role \"system\""},
      {{{}, {{"user", "q"}, {"assistant", "x"}}}, "no image"},
      {one_image(missing, {{"user", "<image>"}, {"assistant", "x"}}), "missing image " + missing},
      {one_image(garbage, {{"user", "<image>"}, {"assistant", "x"}}), "unreadable image " + garbage},
      {one_image(kFormula, {{"user", "<image><image>"}, {"assistant", "x"}}), "holds 2 <image> tags"},
      {one_image(kFormula, {{"user", "<image>"}, {"assistant", "x"}, {"user", "<image>"}, {"assistant", "y"}}),
       "<image> in turn 3"},
      {{{{"<image_00>", kFormula}, {"<image_01>", kFormula}}, {{"user", "<image_00> <image_02>"}, {"assistant", "x"}}},
       "<image_02> in turn 1 names no image"},
      {{{{"<image_00>", kFormula}, {"<image_01>", kFormula}}, {{"user", "<image_00> <image_00>"}, {"assistant", "x"}}},
       "image <image_00> is referenced 2 times"},
      {{{{"<image_00>", kFormula}, {"<image_01>", kFormula}}, {{"user", "<image_00>"}, {"assistant", "x"}}},
       "image <image_01> is referenced 0 times"},
      {{{{"<image_00>", kFormula}, {"<image_01>", kFormula}}, {{"user", "<image_01> <image_00>"}, {"assistant", "x"}}},
       "referenced in the order <image_01>, <image_00>"},
      {{{{"<image_00>", kFormula}, {"<image_01>", kFormula}}, {{"user", "<image> <image_00> <image_01>"}, {"assistant", "x"}}},
       "<image> in turn 1 of a record with several images"},
      {one_image(kFormula, {{"user", "<image> and <slice>"}, {"assistant", "x"}}), "image markers of its own"},
      {one_image(kFormula, {{"user", "<image>\nOCR"}, {"assistant", "x y z"}}), "too long: ",
       {.model_max_length = 60}},
      // Trainable tokens before the cut, but the second image's placeholder is cut.
      {{{{"<image_00>", kFormula}, {"<image_01>", kFormula}},
        {{"user", "<image_00>"}, {"assistant", "x"}, {"user", "<image_01>"}, {"assistant", "y"}}},
       "cuts into the image placeholders", {.model_max_length = 130}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.reason);
    const ExampleBuilder b = builder(c.options);
    const auto built = b.build(c.conversation);
    ASSERT_FALSE(built.ok());
    EXPECT_TRUE(absl::IsInvalidArgument(built.status())) << built.status();
    EXPECT_THAT(built.status().message(), HasSubstr(c.reason));
    EXPECT_EQ(b.check(c.conversation), built.status());
  }
}

TEST(Conversation, TruncationKeepsTheLeadingTokens) {
  const Conversation conv = one_image(kFormula, {{"user", "<image>\nOCR"}, {"assistant", "a b c d e f g h i j"}});
  const auto full = builder().build(conv);
  const auto cut = builder({.model_max_length = 100}).build(conv);
  ASSERT_TRUE(full.ok() && cut.ok()) << cut.status();
  ASSERT_GT(full->input_ids.size(), 100u);
  EXPECT_TRUE(cut->truncated);
  ASSERT_EQ(cut->input_ids.size(), 100u);
  EXPECT_TRUE(std::equal(cut->input_ids.begin(), cut->input_ids.end(), full->input_ids.begin()));
  // Labels are built after the cut: the last kept position has no next token to predict.
  EXPECT_EQ(cut->labels.back(), kIgnoreIndex);
  EXPECT_TRUE(std::equal(cut->labels.begin(), cut->labels.end() - 1, full->labels.begin()));
}

TEST(Conversation, CreateNeedsTheRecipesTokensAndSaneOptions) {
  EXPECT_THAT(ExampleBuilder::create(testing::minicpm_tokenizer(), io::ChatTemplate::qwen25(), {},
                                     {.model_max_length = 0})
                  .status()
                  .message(),
              HasSubstr("model_max_length"));
  EXPECT_THAT(ExampleBuilder::create(testing::minicpm_tokenizer(), io::ChatTemplate::qwen25(), {},
                                     {.max_slice_nums = 0})
                  .status()
                  .message(),
              HasSubstr("max_slice_nums"));
  io::PreprocessorConfig odd;
  odd.slice_start = "<no-such-token>";
  EXPECT_THAT(ExampleBuilder::create(testing::minicpm_tokenizer(), io::ChatTemplate::qwen25(), odd, {})
                  .status()
                  .message(),
              HasSubstr("'<no-such-token>'"));
}

}  // namespace
}  // namespace cpm::core::train
