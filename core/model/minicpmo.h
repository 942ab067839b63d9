// SPDX-License-Identifier: Apache-2.0
//
// MiniCPM-o-2.6's vision path and LLM composed (spec sections 1 and 6): image slices go through the
// vision tower (`vpm`) and the resampler into query_num rows each; the prompt's token embeddings get
// those rows written over its image spans (image_bound), and the LLM (`llm`) runs on the result.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <utility>
#include <vector>

#include "io/model_config.h"
#include "model/lora.h"
#include "model/parameters.h"
#include "model/qwen2.h"
#include "model/resampler.h"
#include "model/siglip.h"

namespace cpm::core::model {

// Every key of the vision path and the LLM (audio and TTS are not part of it), in checkpoint order
// of the parts: vpm, resampler, llm.
std::vector<ParamSpec> minicpmo_parameter_specs(const io::ModelConfig& config);

// Holds tensor handles only; const methods are thread-safe with distinct caches.
class MiniCPMO {
 public:
  // `params` may hold LoRA tensors for LLM projections (model/lora.h); `options` says how to run.
  MiniCPMO(const Parameters& params, const io::ModelConfig& config, const RunOptions& options = {});

  // Image slices (float [3, p, L_i * p] strips) and their (h, w) -> [N, query_num, hidden], the
  // vision tower run in chunks of vision_batch_size (16) as the reference does.
  at::Tensor encode_images(const std::vector<at::Tensor>& pixel_values,
                           const std::vector<std::array<int64_t, 2>>& tgt_sizes) const {
    return encode_prepared(prepare_images(pixel_values, tgt_sizes));
  }
  // encode_images in two halves: what is computed on the host per chunk (the vision tower's and
  // the resampler's Prepared inputs, the chunk's patch slots rounded up to a multiple of
  // `bucket`: padding, masked), then the device work alone, which a captured CUDA graph can replay.
  struct ImageChunk {
    SiglipVisionTransformer::Prepared vision;
    Resampler::Prepared resampler;
  };
  std::vector<ImageChunk> prepare_images(const std::vector<at::Tensor>& pixel_values,
                                         const std::vector<std::array<int64_t, 2>>& tgt_sizes, int64_t bucket = 1) const;
  at::Tensor encode_prepared(const std::vector<ImageChunk>& chunks) const;
  // The two stages of encode_images, for inspection: the vision tower's [N, Lmax, vision hidden]
  // (rows past h*w are padding), and the resampler over it, [N, query_num, hidden].
  at::Tensor vision(const std::vector<at::Tensor>& pixel_values,
                    const std::vector<std::array<int64_t, 2>>& tgt_sizes) const {
    return vpm_.forward(pixel_values, tgt_sizes);
  }
  at::Tensor resample(const at::Tensor& vision, const std::vector<std::array<int64_t, 2>>& tgt_sizes) const {
    return resampler_.forward(vision, tgt_sizes);
  }

  // input_ids [T] -> [1, T, hidden], with the rows of `image_features` ([N, query_num, hidden], in
  // image order) written over the spans of `image_bound` (each query_num long). Throws
  // std::invalid_argument when spans and features disagree.
  at::Tensor prompt_embeddings(const at::Tensor& input_ids,
                               const std::vector<std::pair<int64_t, int64_t>>& image_bound,
                               const at::Tensor& image_features) const;
  // The same with the spans' token positions given on the device (int64 [N * query_num]).
  at::Tensor prompt_embeddings(const at::Tensor& input_ids, const at::Tensor& image_positions,
                               const at::Tensor& image_features) const;
  // The positions of `image_bound`'s spans, int64 [sum of lengths] on `device`.
  static at::Tensor image_positions(const std::vector<std::pair<int64_t, int64_t>>& image_bound, c10::Device device);

  const Qwen2ForCausalLM& llm() const { return llm_; }

 private:
  static constexpr int64_t kVisionBatchSize = 16;
  SiglipVisionTransformer vpm_;
  Resampler resampler_;
  Qwen2ForCausalLM llm_;
};

}  // namespace cpm::core::model
