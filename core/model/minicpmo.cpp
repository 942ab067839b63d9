// SPDX-License-Identifier: Apache-2.0
#include "model/minicpmo.h"

#include <ATen/ops/cat.h>
#include <ATen/ops/tensor.h>

#include <algorithm>
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

std::vector<MiniCPMO::ImageChunk> MiniCPMO::prepare_images(const std::vector<at::Tensor>& pixel_values,
                                                          const std::vector<std::array<int64_t, 2>>& tgt_sizes,
                                                          int64_t bucket) const {
  std::vector<ImageChunk> chunks;
  for (size_t begin = 0; begin < pixel_values.size(); begin += kVisionBatchSize) {
    const size_t end = std::min(pixel_values.size(), begin + static_cast<size_t>(kVisionBatchSize));
    const std::vector<at::Tensor> pixels(pixel_values.begin() + begin, pixel_values.begin() + end);
    const std::vector<std::array<int64_t, 2>> sizes(tgt_sizes.begin() + begin, tgt_sizes.begin() + end);
    int64_t length = 0;
    for (const auto& [h, w] : sizes) length = std::max(length, h * w);
    length = (length + bucket - 1) / bucket * bucket;
    chunks.push_back({vpm_.prepare(pixels, sizes, length), resampler_.prepare(sizes, length)});
  }
  return chunks;
}

at::Tensor MiniCPMO::encode_prepared(const std::vector<ImageChunk>& chunks) const {
  std::vector<at::Tensor> out;
  for (const ImageChunk& c : chunks) out.push_back(resampler_.forward(vpm_.forward(c.vision), c.resampler));  // [n, Q, D]
  return out.size() == 1 ? out.front() : at::cat(out, 0);
}

at::Tensor MiniCPMO::image_positions(const std::vector<std::pair<int64_t, int64_t>>& image_bound, c10::Device device) {
  std::vector<int64_t> positions;
  for (const auto& [start, end] : image_bound) {
    for (int64_t p = start; p < end; ++p) positions.push_back(p);
  }
  return at::tensor(positions, at::kLong).to(device);
}

at::Tensor MiniCPMO::prompt_embeddings(const at::Tensor& input_ids,
                                       const std::vector<std::pair<int64_t, int64_t>>& image_bound,
                                       const at::Tensor& image_features) const {
  if (image_bound.empty()) return llm_.embed(input_ids.unsqueeze(0));
  int64_t covered = 0;
  for (const auto& [start, end] : image_bound) covered += end - start;
  const int64_t rows = image_features.size(0) * image_features.size(1);
  if (covered != rows) {
    throw std::invalid_argument("image_bound spans " + std::to_string(covered) +
                                " tokens but the images give " + std::to_string(rows) + " rows");
  }
  return prompt_embeddings(input_ids, image_positions(image_bound, input_ids.device()), image_features);
}

at::Tensor MiniCPMO::prompt_embeddings(const at::Tensor& input_ids, const at::Tensor& image_positions,
                                       const at::Tensor& image_features) const {
  at::Tensor embeds = llm_.embed(input_ids.unsqueeze(0));  // [1, T, D]
  if (!image_positions.defined() || image_positions.numel() == 0) return embeds;
  // An overwrite, as the reference's scatter: the <unk> embeddings under the spans are discarded.
  embeds = embeds.clone();
  embeds[0].index_copy_(0, image_positions,
                        image_features.reshape({image_positions.size(0), -1}).to(embeds.scalar_type()));
  return embeds;
}

}  // namespace cpm::core::model
