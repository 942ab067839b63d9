// SPDX-License-Identifier: Apache-2.0
//
// Training examples -> one batch, as the recipe's data_collator (finetune/dataset.py) does it:
// each sequence is cut to max_length, then right-padded to the longest (input_ids with 0, labels
// with -100, position_ids with 0, attention_mask with false). Pixel strips, tgt_sizes and
// image_bound stay per-sample lists; right padding leaves the bounds where they are.
//
// One difference in dtype: the recipe's ids and labels are int32, here they are int64, which
// at::embedding and at::cross_entropy take directly.
//
// Thread-safe: a pure function.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "train/conversation.h"

namespace cpm::core::train {

struct Batch {
  at::Tensor input_ids;       // int64 [B, T], padded with 0
  at::Tensor labels;          // int64 [B, T], pre-shifted, padded with -100
  at::Tensor position_ids;    // int64 [B, T], padded with 0
  at::Tensor attention_mask;  // bool [B, T], false on padding
  // Per sample, per strip (source, then slices), as in TrainingExample.
  std::vector<std::vector<at::Tensor>> pixel_values;              // float32 [3, p, h * w * p]
  std::vector<std::vector<std::array<int64_t, 2>>> tgt_sizes;     // (h, w) in patches
  std::vector<std::vector<std::pair<int64_t, int64_t>>> image_bound;  // [start, end) token spans
};

// T = the longest example after cutting to max_length. Pixel tensors are shared, not copied.
// Throws std::invalid_argument for no examples, max_length < 1, or a cut that would split an
// image span (build the examples with the same model_max_length and it cannot happen).
Batch collate(std::span<const TrainingExample> examples, int64_t max_length = 2048);

}  // namespace cpm::core::train
