// SPDX-License-Identifier: Apache-2.0
#include "train/collator.h"

#include <ATen/ops/full.h>

#include <algorithm>
#include <stdexcept>
#include <string>

namespace cpm::core::train {

Batch collate(std::span<const TrainingExample> examples, int64_t max_length) {
  if (examples.empty()) throw std::invalid_argument("collate: no examples");
  if (max_length < 1) throw std::invalid_argument("collate: max_length must be at least 1");
  const auto batch = static_cast<int64_t>(examples.size());
  int64_t width = 0;
  for (const TrainingExample& e : examples) {
    width = std::max(width, std::min(static_cast<int64_t>(e.input_ids.size()), max_length));
  }

  Batch out;
  out.input_ids = at::full({batch, width}, 0, at::kLong);
  out.labels = at::full({batch, width}, kIgnoreIndex, at::kLong);
  out.position_ids = at::full({batch, width}, 0, at::kLong);
  out.attention_mask = at::full({batch, width}, false, at::kBool);
  auto ids = out.input_ids.accessor<int64_t, 2>();
  auto labels = out.labels.accessor<int64_t, 2>();
  auto positions = out.position_ids.accessor<int64_t, 2>();
  auto mask = out.attention_mask.accessor<bool, 2>();
  for (int64_t b = 0; b < batch; ++b) {
    const TrainingExample& e = examples[static_cast<size_t>(b)];
    const int64_t length = std::min(static_cast<int64_t>(e.input_ids.size()), max_length);
    for (const auto& [start, end] : e.image_bound) {
      if (end > length) {
        throw std::invalid_argument("collate: max_length " + std::to_string(max_length) +
                                    " cuts the image span [" + std::to_string(start) + ", " +
                                    std::to_string(end) + ") of example " + std::to_string(b));
      }
    }
    for (int64_t t = 0; t < length; ++t) {
      const auto i = static_cast<size_t>(t);
      ids[b][t] = e.input_ids[i];
      labels[b][t] = e.labels[i];
      positions[b][t] = e.position_ids[i];
      mask[b][t] = true;
    }
    out.pixel_values.push_back(e.pixel_values);
    out.tgt_sizes.push_back(e.tgt_sizes);
    out.image_bound.push_back(e.image_bound);
  }
  return out;
}

}  // namespace cpm::core::train
