// SPDX-License-Identifier: Apache-2.0
#include "model/minicpmo.h"

#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>

#include <stdexcept>
#include <string>

namespace cpm::core::model {

std::vector<ParamSpec> minicpmo_parameter_specs(const io::ModelConfig& c) {
  std::vector<ParamSpec> specs = siglip_parameter_specs(c.vision, c.vision.num_hidden_layers, "vpm");
  for (ParamSpec& s : resampler_parameter_specs(c.hidden_size, c.vision.hidden_size,
                                                c.resampler_heads(), c.query_num, "resampler")) {
    specs.push_back(std::move(s));
  }
  for (ParamSpec& s : qwen2_parameter_specs(c, "llm")) specs.push_back(std::move(s));
  return specs;
}

MiniCPMO::MiniCPMO(const Parameters& params, const io::ModelConfig& c, const RunOptions& options)
    : vpm_(params, "vpm", c.vision, c.vision_layers_used(), options.training && options.gradient_checkpointing),
      resampler_(params, "resampler", c.hidden_size, c.resampler_heads()),
      llm_(params, "llm", c, options) {}

at::Tensor MiniCPMO::encode_images(const std::vector<at::Tensor>& pixel_values,
                                   const std::vector<std::array<int64_t, 2>>& tgt_sizes,
                                   const std::vector<at::Tensor>& position_ids) const {
  std::vector<at::Tensor> chunks;
  for (size_t begin = 0; begin < pixel_values.size(); begin += kVisionBatchSize) {
    const size_t end = std::min(pixel_values.size(), begin + static_cast<size_t>(kVisionBatchSize));
    const std::vector<at::Tensor> pixels(pixel_values.begin() + begin, pixel_values.begin() + end);
    const std::vector<std::array<int64_t, 2>> sizes(tgt_sizes.begin() + begin, tgt_sizes.begin() + end);
    const size_t chunk = begin / kVisionBatchSize;
    const at::Tensor ids = chunk < position_ids.size() ? position_ids[chunk] : at::Tensor();
    chunks.push_back(resampler_.forward(vpm_.forward(pixels, sizes, ids), sizes));  // [n, Q, D]
  }
  return at::cat(chunks, 0);
}

std::vector<at::Tensor> MiniCPMO::vision_position_ids(const std::vector<std::array<int64_t, 2>>& tgt_sizes) const {
  std::vector<at::Tensor> out;
  for (size_t begin = 0; begin < tgt_sizes.size(); begin += kVisionBatchSize) {
    const size_t end = std::min(tgt_sizes.size(), begin + static_cast<size_t>(kVisionBatchSize));
    out.push_back(vpm_.position_ids({tgt_sizes.begin() + begin, tgt_sizes.begin() + end}));
  }
  return out;
}

at::Tensor MiniCPMO::prompt_embeddings(const at::Tensor& input_ids,
                                       const std::vector<std::pair<int64_t, int64_t>>& image_bound,
                                       const at::Tensor& image_features) const {
  at::Tensor embeds = llm_.embed(input_ids.unsqueeze(0));  // [1, T, D]
  if (image_bound.empty()) return embeds;
  const int64_t rows = image_features.size(0) * image_features.size(1);
  std::vector<at::Tensor> spans;
  int64_t covered = 0;
  for (const auto& [start, end] : image_bound) {
    spans.push_back(at::arange(start, end, input_ids.options().dtype(at::kLong)));
    covered += end - start;
  }
  if (covered != rows) {
    throw std::invalid_argument("image_bound spans " + std::to_string(covered) +
                                " tokens but the images give " + std::to_string(rows) + " rows");
  }
  // An overwrite, as the reference's scatter: the <unk> embeddings under the spans are discarded.
  embeds = embeds.clone();
  embeds[0].index_copy_(0, at::cat(spans), image_features.reshape({rows, -1}).to(embeds.scalar_type()));
  return embeds;
}

}  // namespace cpm::core::model
