// SPDX-License-Identifier: Apache-2.0
//
// The JSON files of a MiniCPM-o-2.6 checkpoint directory, parsed into typed structs. Every number
// the model uses comes from here; defaults are the spec's (minicpm-o-2_6.md) and apply only where
// a file omits a field. Errors are INVALID_ARGUMENT naming the file and the field.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace cpm::core::io {

// config.json "vision_config" (SigLIP NaViT).
struct VisionConfig {
  int hidden_size = 1152;
  int intermediate_size = 4304;
  int num_hidden_layers = 27;
  int num_attention_heads = 16;
  int patch_size = 14;
  int image_size = 980;  // sets the position table: (image_size / patch_size)^2 entries
  double layer_norm_eps = 1e-6;
  std::string hidden_act = "gelu_pytorch_tanh";
};

// config.json: the Qwen2 LLM fields at the top level plus the MiniCPM-V fields.
struct ModelConfig {
  std::vector<std::string> architectures;  // ["MiniCPMO"]
  std::string model_type;                  // "minicpmo"
  int hidden_size = 3584;
  int intermediate_size = 18944;
  int num_hidden_layers = 28;
  int num_attention_heads = 28;
  int num_key_value_heads = 4;
  int vocab_size = 151700;
  double rope_theta = 1000000.0;
  double rms_norm_eps = 1e-6;
  int max_position_embeddings = 32768;
  bool tie_word_embeddings = false;
  std::string hidden_act = "silu";
  int bos_token_id = 151643;
  int eos_token_id = 151645;
  std::string torch_dtype = "bfloat16";
  // MiniCPM-V
  int query_num = 64;
  int max_slice_nums = 9;
  int scale_resolution = 448;
  int patch_size = 14;
  bool slice_mode = true;
  bool use_image_id = true;
  bool drop_vision_last_layer = false;
  VisionConfig vision;

  int head_dim() const { return hidden_size / num_attention_heads; }
  // The resampler's attention: embed_dim = hidden_size, heads = hidden_size / 128.
  int resampler_heads() const { return hidden_size / 128; }
  // Vision layers actually run (the last is dropped when drop_vision_last_layer).
  int vision_layers_used() const {
    return vision.num_hidden_layers - (drop_vision_last_layer ? 1 : 0);
  }
};

// preprocessor_config.json (MiniCPMVImageProcessor).
struct PreprocessorConfig {
  int max_slice_nums = 9;
  int scale_resolution = 448;
  int patch_size = 14;
  bool slice_mode = true;
  int image_feature_size = 64;
  bool use_image_id = true;
  std::vector<double> norm_mean = {0.5, 0.5, 0.5};
  std::vector<double> norm_std = {0.5, 0.5, 0.5};
  std::string im_start = "<image>";
  std::string im_end = "</image>";
  std::string slice_start = "<slice>";
  std::string slice_end = "</slice>";
  std::string unk = "<unk>";
  std::string im_id_start = "<image_id>";
  std::string im_id_end = "</image_id>";
};

// generation_config.json; unset fields keep the reference chat() defaults (spec section 8).
struct GenerationConfig {
  std::optional<bool> do_sample;
  std::optional<double> temperature;
  std::optional<int> top_k;
  std::optional<double> top_p;
  std::optional<double> repetition_penalty;
  std::optional<int> max_new_tokens;
  std::vector<int> eos_token_ids;  // empty: from the tokenizer (<|im_end|>, <|endoftext|>)
  std::optional<int> pad_token_id;
};

// tokenizer_config.json: the fields the prompt builder needs.
struct TokenizerConfig {
  std::string chat_template;  // Jinja source; empty when absent
  std::string eos_token;
  std::string pad_token;
  std::string unk_token;
  std::string bos_token;
  bool add_bos_token = false;
};

absl::StatusOr<ModelConfig> parse_model_config(const std::string& json_text,
                                               const std::string& source);
absl::StatusOr<PreprocessorConfig> parse_preprocessor_config(const std::string& json_text,
                                                             const std::string& source);
absl::StatusOr<GenerationConfig> parse_generation_config(const std::string& json_text,
                                                         const std::string& source);
absl::StatusOr<TokenizerConfig> parse_tokenizer_config(const std::string& json_text,
                                                       const std::string& source);

// The four files of a checkpoint directory. config.json is required; the others fall back to
// defaults when missing (the reference does the same), which `missing` lists.
struct CheckpointConfigs {
  ModelConfig model;
  PreprocessorConfig preprocessor;
  GenerationConfig generation;
  TokenizerConfig tokenizer;
  std::vector<std::string> missing;
};
absl::StatusOr<CheckpointConfigs> load_checkpoint_configs(const std::string& dir);

// Reads a whole file; NOT_FOUND / UNAVAILABLE with the path.
absl::StatusOr<std::string> read_file(const std::string& path);

}  // namespace cpm::core::io
