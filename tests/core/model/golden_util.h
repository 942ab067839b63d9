// SPDX-License-Identifier: Apache-2.0
//
// Reading the goldens of tests/data/model: the configs the generator scripts store in the
// safetensors metadata, and the `golden.*` tensors that sit beside the weights.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/model_config.h"
#include "io/safetensors.h"
#include "model/parameters.h"

namespace cpm::testing {

// A transformers Qwen2Config as the scripts write it.
inline core::io::ModelConfig llm_config_from(const nlohmann::json& l) {
  core::io::ModelConfig c;
  c.vocab_size = l["vocab_size"];
  c.hidden_size = l["hidden_size"];
  c.intermediate_size = l["intermediate_size"];
  c.num_hidden_layers = l["num_hidden_layers"];
  c.num_attention_heads = l["num_attention_heads"];
  c.num_key_value_heads = l["num_key_value_heads"];
  c.rope_theta = l["rope_theta"];
  c.rms_norm_eps = l["rms_norm_eps"];
  c.tie_word_embeddings = l["tie_word_embeddings"];
  return c;
}

// An Idefics2VisionConfig as the scripts write it.
inline core::io::VisionConfig vision_config_from(const nlohmann::json& v) {
  core::io::VisionConfig c;
  c.hidden_size = v["hidden_size"];
  c.intermediate_size = v["intermediate_size"];
  c.num_hidden_layers = v["num_hidden_layers"];
  c.num_attention_heads = v["num_attention_heads"];
  c.patch_size = v["patch_size"];
  c.image_size = v["image_size"];
  c.layer_norm_eps = v["layer_norm_eps"];
  return c;
}

// The metadata entry `key` of the file holding `tensor`, parsed.
inline nlohmann::json golden_meta(const core::io::SafetensorsCheckpoint& ckpt, const std::string& tensor,
                                  const std::string& key = "config") {
  return nlohmann::json::parse(ckpt.file_of(tensor)->header().metadata.at(key));
}

// `specs` plus every `golden.*` tensor of the file, so that a strict load accepts the file.
inline std::vector<core::model::ParamSpec> with_goldens(std::vector<core::model::ParamSpec> specs,
                                                        const core::io::SafetensorsCheckpoint& ckpt) {
  for (const std::string& name : ckpt.names()) {
    if (name.rfind("golden.", 0) == 0) specs.push_back({name, ckpt.find(name)->shape, core::model::Init::kNormal});
  }
  return specs;
}

}  // namespace cpm::testing
