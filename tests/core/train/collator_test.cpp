// SPDX-License-Identifier: Apache-2.0
#include "train/collator.h"

#include <ATen/ops/zeros.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <stdexcept>
#include <vector>

namespace cpm::core::train {
namespace {

TrainingExample example(std::vector<int32_t> ids, std::vector<std::pair<int64_t, int64_t>> bounds = {}) {
  TrainingExample e;
  e.labels.assign(ids.size(), kIgnoreIndex);
  if (!ids.empty()) e.labels[ids.size() - 2] = ids.back();
  for (size_t i = 0; i < ids.size(); ++i) e.position_ids.push_back(static_cast<int64_t>(i));
  e.input_ids = std::move(ids);
  e.image_bound = std::move(bounds);
  for (size_t k = 0; k < e.image_bound.size(); ++k) {
    e.pixel_values.push_back(at::zeros({3, 14, 14 * 4}));
    e.tgt_sizes.push_back({2, 2});
  }
  return e;
}

TEST(Collate, RightPadsWithTheRecipesValues) {
  const std::vector<TrainingExample> examples = {example({5, 6, 7, 8}, {{1, 2}}), example({9, 10})};
  const Batch b = collate(examples);
  ASSERT_EQ(b.input_ids.sizes().vec(), (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(b.input_ids.scalar_type(), at::kLong);
  EXPECT_EQ(b.labels.scalar_type(), at::kLong);
  EXPECT_EQ(b.attention_mask.scalar_type(), at::kBool);
  auto row = [](const at::Tensor& t, int64_t r) {
    const at::Tensor x = t[r].to(at::kLong).contiguous();
    return std::vector<int64_t>(x.data_ptr<int64_t>(), x.data_ptr<int64_t>() + x.numel());
  };
  EXPECT_EQ(row(b.input_ids, 1), (std::vector<int64_t>{9, 10, 0, 0}));
  EXPECT_EQ(row(b.labels, 0), (std::vector<int64_t>{-100, -100, 8, -100}));
  EXPECT_EQ(row(b.labels, 1), (std::vector<int64_t>{10, -100, -100, -100}));
  EXPECT_EQ(row(b.position_ids, 1), (std::vector<int64_t>{0, 1, 0, 0}));
  EXPECT_EQ(row(b.attention_mask, 0), (std::vector<int64_t>{1, 1, 1, 1}));
  EXPECT_EQ(row(b.attention_mask, 1), (std::vector<int64_t>{1, 1, 0, 0}));
  // Per-sample lists, the pixel tensors shared.
  ASSERT_EQ(b.pixel_values.size(), 2u);
  EXPECT_EQ(b.pixel_values[0].size(), 1u);
  EXPECT_TRUE(b.pixel_values[0][0].is_same(examples[0].pixel_values[0]));
  EXPECT_TRUE(b.pixel_values[1].empty());
  EXPECT_EQ(b.image_bound[0], examples[0].image_bound);
  EXPECT_EQ(b.tgt_sizes[0], examples[0].tgt_sizes);
}

TEST(Collate, TrimsToMaxLengthButNeverThroughAnImage) {
  const std::vector<TrainingExample> examples = {example({1, 2, 3, 4, 5, 6}, {{1, 3}}), example({7, 8})};
  const Batch b = collate(examples, 4);
  EXPECT_EQ(b.input_ids.sizes().vec(), (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(b.input_ids[0][3].item<int64_t>(), 4);
  EXPECT_THROW(collate(examples, 2), std::invalid_argument);
  EXPECT_THROW(collate({}, 4), std::invalid_argument);
  EXPECT_THROW(collate(examples, 0), std::invalid_argument);
}

}  // namespace
}  // namespace cpm::core::train
