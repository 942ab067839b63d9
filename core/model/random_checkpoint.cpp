// SPDX-License-Identifier: Apache-2.0
#include "model/random_checkpoint.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/zeros.h>
#include <ATen/core/Generator.h>
#include <ATen/CPUGeneratorImpl.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "io/prompt.h"
#include "io/safetensors.h"
#include "io/tokenizer.h"
#include "model/minicpmo.h"
#include "nlohmann/json.hpp"

namespace cpm::core::model {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Qwen2.5's chat template shape: the system turn, else the default one, then ChatML turns.
constexpr const char* kChatTemplate =
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + "
    "'<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. "
    "You are a helpful assistant.<|im_end|>\\n' }}{%- endif %}{%- for message in messages %}{%- if "
    "not (message.role == 'system' and loop.first) %}{{- '<|im_start|>' + message.role + '\\n' + "
    "message.content + '<|im_end|>' + '\\n' }}{%- endif %}{%- endfor %}{%- if add_generation_prompt "
    "%}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

absl::Status write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  out.close();
  if (!out) return absl::UnavailableError(absl::StrCat(path.string(), ": write failed"));
  return absl::OkStatus();
}

const char* dtype_text(c10::ScalarType t) {
  return t == c10::ScalarType::BFloat16 ? "bfloat16" : t == c10::ScalarType::Half ? "float16" : "float32";
}

}  // namespace

io::ModelConfig tiny_config() {
  io::ModelConfig c;
  c.architectures = {"MiniCPMO"};
  c.model_type = "minicpmo";
  c.hidden_size = 128;
  c.intermediate_size = 256;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.tie_word_embeddings = true;
  c.max_position_embeddings = 4096;
  c.torch_dtype = "float32";
  c.vision.hidden_size = 64;
  c.vision.intermediate_size = 128;
  c.vision.num_hidden_layers = 2;
  c.vision.num_attention_heads = 2;
  return c;
}

io::ModelConfig full_config() {
  io::ModelConfig c;  // the defaults are MiniCPM-o-2.6's numbers
  c.architectures = {"MiniCPMO"};
  c.model_type = "minicpmo";
  return c;
}

std::string model_config_json(const io::ModelConfig& c) {
  json doc = {
      {"architectures", c.architectures},
      {"model_type", c.model_type},
      {"hidden_size", c.hidden_size},
      {"intermediate_size", c.intermediate_size},
      {"num_hidden_layers", c.num_hidden_layers},
      {"num_attention_heads", c.num_attention_heads},
      {"num_key_value_heads", c.num_key_value_heads},
      {"vocab_size", c.vocab_size},
      {"rope_theta", c.rope_theta},
      {"rms_norm_eps", c.rms_norm_eps},
      {"max_position_embeddings", c.max_position_embeddings},
      {"tie_word_embeddings", c.tie_word_embeddings},
      {"hidden_act", c.hidden_act},
      {"bos_token_id", c.bos_token_id},
      {"eos_token_id", c.eos_token_id},
      {"torch_dtype", c.torch_dtype},
      {"use_sliding_window", false},
      {"query_num", c.query_num},
      {"patch_size", c.patch_size},
      {"slice_mode", c.slice_mode},
      {"use_image_id", c.use_image_id},
      {"drop_vision_last_layer", c.drop_vision_last_layer},
      {"vision_batch_size", 16},
      {"init_audio", false},
      {"init_tts", false},
      {"slice_config",
       {{"max_slice_nums", c.max_slice_nums}, {"patch_size", c.patch_size},
        {"scale_resolution", c.scale_resolution}, {"model_type", "minicpmv"}}},
      {"vision_config",
       {{"hidden_size", c.vision.hidden_size}, {"intermediate_size", c.vision.intermediate_size},
        {"num_hidden_layers", c.vision.num_hidden_layers},
        {"num_attention_heads", c.vision.num_attention_heads}, {"patch_size", c.vision.patch_size},
        {"image_size", c.vision.image_size}, {"layer_norm_eps", c.vision.layer_norm_eps},
        {"hidden_act", c.vision.hidden_act}, {"model_type", "siglip_vision_model"}}},
  };
  return doc.dump(2);
}

absl::Status write_random_checkpoint(const std::string& dir, const io::ModelConfig& config,
                                     const RandomCheckpointOptions& options) {
  std::error_code ec;
  const fs::path target = fs::absolute(dir, ec).lexically_normal();
  if (fs::exists(target, ec)) {
    return absl::AlreadyExistsError(absl::StrCat(target.string(), " already exists; remove it or pick another --out"));
  }
  const fs::path tmp = target.parent_path() / absl::StrCat(".", target.filename().string(), ".partial");
  fs::remove_all(tmp, ec);
  if (!fs::create_directories(tmp, ec)) {
    return absl::UnavailableError(absl::StrCat("cannot create ", tmp.string(), ": ", ec.message()));
  }

  // Tokenizer: the real Qwen BPE plus MiniCPM-o's tokens; their ids must fit the vocabulary.
  auto base = io::read_file(options.base_tokenizer_json);
  if (!base.ok()) return base.status();
  std::vector<std::string> added(std::begin(io::kMiniCpmSpecialTokens), std::end(io::kMiniCpmSpecialTokens));
  added.push_back("<unk>");
  auto tokenizer_json = io::add_special_tokens(*base, added);
  if (!tokenizer_json.ok()) return tokenizer_json.status();
  auto tokenizer = io::load_bpe_tokenizer_json(*tokenizer_json, options.base_tokenizer_json);
  if (!tokenizer.ok()) return tokenizer.status();
  if ((*tokenizer)->vocab_size() > config.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("the tokenizer has ", (*tokenizer)->vocab_size(),
                                                   " tokens but vocab_size is ", config.vocab_size));
  }
  io::ModelConfig written = config;
  written.torch_dtype = dtype_text(options.dtype);
  const json preprocessor = {
      {"image_processor_type", "MiniCPMVImageProcessor"}, {"max_slice_nums", config.max_slice_nums},
      {"scale_resolution", config.scale_resolution}, {"patch_size", config.patch_size},
      {"use_image_id", config.use_image_id}, {"image_feature_size", config.query_num},
      {"slice_mode", config.slice_mode}, {"norm_mean", {0.5, 0.5, 0.5}}, {"norm_std", {0.5, 0.5, 0.5}},
      {"im_start", "<image>"}, {"im_end", "</image>"}, {"slice_start", "<slice>"},
      {"slice_end", "</slice>"}, {"unk", "<unk>"}, {"im_id_start", "<image_id>"},
      {"im_id_end", "</image_id>"}};
  const json generation = {{"bos_token_id", config.bos_token_id},
                           {"eos_token_id", {151645, 151643}},
                           {"pad_token_id", 0}};
  const json tokenizer_config = {{"chat_template", kChatTemplate}, {"eos_token", "<|im_end|>"},
                                 {"pad_token", "<|endoftext|>"}, {"unk_token", "<unk>"},
                                 {"bos_token", nullptr}, {"add_bos_token", false},
                                 {"tokenizer_class", "MiniCPM_o_2_6TokenizerFast"}};
  for (const auto& [name, text] : std::vector<std::pair<std::string, std::string>>{
           {"config.json", model_config_json(written)},
           {"preprocessor_config.json", preprocessor.dump(2)},
           {"generation_config.json", generation.dump(2)},
           {"tokenizer.json", *tokenizer_json},
           {"tokenizer_config.json", tokenizer_config.dump(2)}}) {
    if (auto s = write_text(tmp / name, text); !s.ok()) return s;
  }

  // Weights. Shard boundaries come from the specs' sizes first (file names carry the count), then
  // each shard is generated and written before the next, so at most one shard is in memory. One
  // generator, seeded once, in spec order: the checkpoint is reproducible.
  const std::vector<ParamSpec> specs = minicpmo_parameter_specs(config);
  const int64_t element = static_cast<int64_t>(c10::elementSize(options.dtype));
  std::vector<std::vector<const ParamSpec*>> shards(1);
  int64_t shard_bytes = 0, total = 0;
  for (const ParamSpec& spec : specs) {
    int64_t bytes = element;
    for (int64_t d : spec.shape) bytes *= d;
    if (shard_bytes > 0 && shard_bytes + bytes > options.max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(&spec);
    shard_bytes += bytes;
    total += bytes;
  }
  auto generator = at::make_generator<at::CPUGeneratorImpl>(options.seed);
  const auto dtype = at::TensorOptions().dtype(options.dtype);
  json weight_map = json::object();
  for (size_t i = 0; i < shards.size(); ++i) {
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    for (const ParamSpec* spec : shards[i]) {
      at::Tensor t;
      if (spec->init == Init::kOnes) {
        t = at::ones(spec->shape, dtype);
      } else if (spec->init == Init::kZeros) {
        t = at::zeros(spec->shape, dtype);
      } else {
        t = at::empty(spec->shape, at::TensorOptions().dtype(at::kFloat)).normal_(0.0, 0.02, generator).to(options.dtype);
      }
      tensors.emplace_back(spec->name, std::move(t));
    }
    const std::string name = absl::StrFormat("model-%05d-of-%05d.safetensors", i + 1, shards.size());
    if (auto s = io::write_safetensors((tmp / name).string(), tensors, {{"format", "pt"}}); !s.ok()) return s;
    for (const ParamSpec* spec : shards[i]) weight_map[spec->name] = name;
  }
  const json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  if (auto s = write_text(tmp / "model.safetensors.index.json", index.dump(2)); !s.ok()) return s;
  fs::rename(tmp, target, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot move ", tmp.string(), " to ", target.string(), ": ", ec.message()));
  return absl::OkStatus();
}

}  // namespace cpm::core::model
