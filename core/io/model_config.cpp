// SPDX-License-Identifier: Apache-2.0
#include "io/model_config.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace cpm::core::io {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Reads optional fields of one JSON object with type checks; the first problem sticks.
class Reader {
 public:
  Reader(const json& obj, std::string source) : obj_(obj), source_(std::move(source)) {}

  void get(const char* key, int& out) {
    if (const json* v = find(key)) {
      if (v->is_number_integer() && v->get<int64_t>() >= INT32_MIN && v->get<int64_t>() <= INT32_MAX) {
        out = v->get<int>();
      } else {
        fail(key, "an integer");
      }
    }
  }
  void get(const char* key, double& out) {
    if (const json* v = find(key)) {
      v->is_number() ? void(out = v->get<double>()) : fail(key, "a number");
    }
  }
  void get(const char* key, bool& out) {
    if (const json* v = find(key)) v->is_boolean() ? void(out = v->get<bool>()) : fail(key, "true or false");
  }
  void get(const char* key, std::string& out) {
    if (const json* v = find(key)) {
      if (v->is_string()) {
        out = v->get<std::string>();
      } else if (v->is_object() && v->contains("content") && (*v)["content"].is_string()) {
        out = (*v)["content"].get<std::string>();  // tokenizer_config's AddedToken form
      } else {
        fail(key, "a string");
      }
    }
  }
  template <typename T>
  void get(const char* key, std::optional<T>& out) {
    if (find(key) == nullptr) return;
    T v{};
    get(key, v);
    out = v;
  }
  void get(const char* key, std::vector<double>& out) {
    if (const json* v = find(key)) {
      out.clear();
      if (!v->is_array()) return fail(key, "an array of numbers");
      for (const json& e : *v) {
        if (!e.is_number()) return fail(key, "an array of numbers");
        out.push_back(e.get<double>());
      }
    }
  }
  void get(const char* key, std::vector<std::string>& out) {
    if (const json* v = find(key)) {
      out.clear();
      if (!v->is_array()) return fail(key, "an array of strings");
      for (const json& e : *v) {
        if (!e.is_string()) return fail(key, "an array of strings");
        out.push_back(e.get<std::string>());
      }
    }
  }
  // An int or a list of ints (eos_token_id takes both forms).
  void get_ids(const char* key, std::vector<int>& out) {
    if (const json* v = find(key)) {
      out.clear();
      if (v->is_number_integer()) {
        out.push_back(v->get<int>());
      } else if (v->is_array()) {
        for (const json& e : *v) {
          if (!e.is_number_integer()) return fail(key, "an integer or a list of integers");
          out.push_back(e.get<int>());
        }
      } else {
        fail(key, "an integer or a list of integers");
      }
    }
  }
  const json* object(const char* key) {
    const json* v = find(key);
    if (v != nullptr && !v->is_object()) {
      fail(key, "an object");
      return nullptr;
    }
    return v;
  }
  // Checks a parsed value; `what` says what it must be.
  void require(bool ok, const std::string& what) {
    if (!ok && status_.ok()) status_ = absl::InvalidArgumentError(absl::StrCat(source_, ": ", what));
  }
  const absl::Status& status() const { return status_; }
  const std::string& source() const { return source_; }

 private:
  const json* find(const char* key) {
    const auto it = obj_.find(key);
    return it == obj_.end() || it->is_null() ? nullptr : &*it;
  }
  void fail(const char* key, const char* expected) {
    if (status_.ok()) {
      status_ = absl::InvalidArgumentError(
          absl::StrCat(source_, ": '", key, "' must be ", expected));
    }
  }

  const json& obj_;
  const std::string source_;
  absl::Status status_;
};

absl::StatusOr<json> parse_object(const std::string& text, const std::string& source) {
  try {
    json doc = json::parse(text);
    if (!doc.is_object()) return absl::InvalidArgumentError(source + ": is not a JSON object");
    return doc;
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not valid JSON: ", e.what()));
  }
}

}  // namespace

absl::StatusOr<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::error_code ec;
    return fs::exists(path, ec) ? absl::UnavailableError(absl::StrCat(path, ": cannot be read"))
                                : absl::NotFoundError(absl::StrCat(path, ": no such file"));
  }
  std::ostringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

absl::StatusOr<ModelConfig> parse_model_config(const std::string& json_text,
                                               const std::string& source) {
  auto doc = parse_object(json_text, source);
  if (!doc.ok()) return doc.status();
  ModelConfig c;
  Reader r(*doc, source);
  r.get("architectures", c.architectures);
  r.get("model_type", c.model_type);
  r.get("hidden_size", c.hidden_size);
  r.get("intermediate_size", c.intermediate_size);
  r.get("num_hidden_layers", c.num_hidden_layers);
  r.get("num_attention_heads", c.num_attention_heads);
  // Qwen2 defaults num_key_value_heads to num_attention_heads (no GQA) when the key is absent.
  c.num_key_value_heads = c.num_attention_heads;
  r.get("num_key_value_heads", c.num_key_value_heads);
  r.get("vocab_size", c.vocab_size);
  r.get("rope_theta", c.rope_theta);
  r.get("rms_norm_eps", c.rms_norm_eps);
  r.get("max_position_embeddings", c.max_position_embeddings);
  r.get("tie_word_embeddings", c.tie_word_embeddings);
  r.get("hidden_act", c.hidden_act);
  r.get("bos_token_id", c.bos_token_id);
  std::vector<int> eos;
  r.get_ids("eos_token_id", eos);
  if (!eos.empty()) c.eos_token_id = eos.front();
  r.get("torch_dtype", c.torch_dtype);
  r.get("query_num", c.query_num);
  r.get("patch_size", c.patch_size);
  r.get("slice_mode", c.slice_mode);
  r.get("use_image_id", c.use_image_id);
  r.get("drop_vision_last_layer", c.drop_vision_last_layer);
  // MiniCPM-V keeps the slicing numbers in "slice_config"; older configs have them at the top.
  r.get("max_slice_nums", c.max_slice_nums);
  r.get("scale_resolution", c.scale_resolution);
  if (const json* slice = r.object("slice_config")) {
    Reader s(*slice, source + " slice_config");
    s.get("max_slice_nums", c.max_slice_nums);
    s.get("scale_resolution", c.scale_resolution);
    s.get("patch_size", c.patch_size);
    r.require(s.status().ok(), std::string(s.status().message()));
  }
  if (const json* vision = r.object("vision_config")) {
    Reader v(*vision, source + " vision_config");
    v.get("hidden_size", c.vision.hidden_size);
    v.get("intermediate_size", c.vision.intermediate_size);
    v.get("num_hidden_layers", c.vision.num_hidden_layers);
    v.get("num_attention_heads", c.vision.num_attention_heads);
    v.get("patch_size", c.vision.patch_size);
    v.get("image_size", c.vision.image_size);
    v.get("layer_norm_eps", c.vision.layer_norm_eps);
    v.get("hidden_act", c.vision.hidden_act);
    r.require(v.status().ok(), std::string(v.status().message()));
  }
  if (!r.status().ok()) return r.status();

  auto positive = [&](int v, const char* name) {
    r.require(v > 0, absl::StrCat("'", name, "' must be positive, got ", v));
  };
  positive(c.hidden_size, "hidden_size");
  positive(c.intermediate_size, "intermediate_size");
  positive(c.num_hidden_layers, "num_hidden_layers");
  positive(c.num_attention_heads, "num_attention_heads");
  positive(c.num_key_value_heads, "num_key_value_heads");
  positive(c.vocab_size, "vocab_size");
  positive(c.query_num, "query_num");
  positive(c.max_slice_nums, "max_slice_nums");
  positive(c.scale_resolution, "scale_resolution");
  positive(c.patch_size, "patch_size");
  positive(c.vision.hidden_size, "vision_config.hidden_size");
  positive(c.vision.num_hidden_layers, "vision_config.num_hidden_layers");
  positive(c.vision.num_attention_heads, "vision_config.num_attention_heads");
  positive(c.vision.patch_size, "vision_config.patch_size");
  if (!r.status().ok()) return r.status();
  r.require(c.hidden_size % c.num_attention_heads == 0,
            absl::StrCat("hidden_size ", c.hidden_size, " is not a multiple of num_attention_heads ",
                         c.num_attention_heads));
  r.require(c.num_attention_heads % c.num_key_value_heads == 0,
            absl::StrCat("num_attention_heads ", c.num_attention_heads,
                         " is not a multiple of num_key_value_heads ", c.num_key_value_heads));
  r.require(c.head_dim() % 2 == 0, absl::StrCat("head_dim ", c.head_dim(), " must be even (RoPE)"));
  r.require(c.hidden_size % 128 == 0,
            absl::StrCat("hidden_size ", c.hidden_size,
                         " must be a multiple of 128 (the resampler uses heads of 128)"));
  r.require(c.vision.hidden_size % c.vision.num_attention_heads == 0,
            "vision_config.hidden_size must be a multiple of vision_config.num_attention_heads");
  r.require(c.vision.image_size % c.vision.patch_size == 0,
            "vision_config.image_size must be a multiple of vision_config.patch_size");
  r.require(c.patch_size == c.vision.patch_size,
            absl::StrCat("patch_size ", c.patch_size, " differs from vision_config.patch_size ",
                         c.vision.patch_size));
  r.require(c.rms_norm_eps > 0 && c.rope_theta > 0, "rms_norm_eps and rope_theta must be positive");
  r.require(c.vision_layers_used() > 0, "drop_vision_last_layer leaves no vision layer");
  if (!r.status().ok()) return r.status();
  return c;
}

absl::StatusOr<PreprocessorConfig> parse_preprocessor_config(const std::string& json_text,
                                                             const std::string& source) {
  auto doc = parse_object(json_text, source);
  if (!doc.ok()) return doc.status();
  PreprocessorConfig c;
  Reader r(*doc, source);
  r.get("max_slice_nums", c.max_slice_nums);
  r.get("scale_resolution", c.scale_resolution);
  r.get("patch_size", c.patch_size);
  r.get("slice_mode", c.slice_mode);
  r.get("image_feature_size", c.image_feature_size);
  r.get("use_image_id", c.use_image_id);
  r.get("norm_mean", c.norm_mean);
  r.get("norm_std", c.norm_std);
  r.get("im_start", c.im_start);
  r.get("im_end", c.im_end);
  r.get("slice_start", c.slice_start);
  r.get("slice_end", c.slice_end);
  r.get("unk", c.unk);
  r.get("im_id_start", c.im_id_start);
  r.get("im_id_end", c.im_id_end);
  if (!r.status().ok()) return r.status();
  r.require(c.max_slice_nums > 0, "'max_slice_nums' must be positive");
  r.require(c.scale_resolution > 0, "'scale_resolution' must be positive");
  r.require(c.patch_size > 0, "'patch_size' must be positive");
  r.require(c.image_feature_size > 0, "'image_feature_size' must be positive");
  r.require(c.norm_mean.size() == 3 && c.norm_std.size() == 3,
            "'norm_mean' and 'norm_std' must have 3 values (R, G, B)");
  for (double s : c.norm_std) r.require(s > 0, "'norm_std' values must be positive");
  if (!r.status().ok()) return r.status();
  return c;
}

absl::StatusOr<GenerationConfig> parse_generation_config(const std::string& json_text,
                                                         const std::string& source) {
  auto doc = parse_object(json_text, source);
  if (!doc.ok()) return doc.status();
  GenerationConfig c;
  Reader r(*doc, source);
  r.get("do_sample", c.do_sample);
  r.get("temperature", c.temperature);
  r.get("top_k", c.top_k);
  r.get("top_p", c.top_p);
  r.get("repetition_penalty", c.repetition_penalty);
  r.get("max_new_tokens", c.max_new_tokens);
  r.get_ids("eos_token_id", c.eos_token_ids);
  r.get("pad_token_id", c.pad_token_id);
  if (!r.status().ok()) return r.status();
  if (c.temperature) r.require(*c.temperature > 0, "'temperature' must be positive");
  if (c.top_p) r.require(*c.top_p > 0 && *c.top_p <= 1, "'top_p' must be in (0, 1]");
  if (c.top_k) r.require(*c.top_k >= 0, "'top_k' must not be negative");
  if (c.repetition_penalty) r.require(*c.repetition_penalty > 0, "'repetition_penalty' must be positive");
  if (c.max_new_tokens) r.require(*c.max_new_tokens > 0, "'max_new_tokens' must be positive");
  if (!r.status().ok()) return r.status();
  return c;
}

absl::StatusOr<TokenizerConfig> parse_tokenizer_config(const std::string& json_text,
                                                       const std::string& source) {
  auto doc = parse_object(json_text, source);
  if (!doc.ok()) return doc.status();
  TokenizerConfig c;
  Reader r(*doc, source);
  r.get("chat_template", c.chat_template);
  r.get("eos_token", c.eos_token);
  r.get("pad_token", c.pad_token);
  r.get("unk_token", c.unk_token);
  r.get("bos_token", c.bos_token);
  r.get("add_bos_token", c.add_bos_token);
  if (!r.status().ok()) return r.status();
  return c;
}

absl::StatusOr<CheckpointConfigs> load_checkpoint_configs(const std::string& dir) {
  CheckpointConfigs out;
  const fs::path root(dir);
  auto text = read_file((root / "config.json").string());
  if (!text.ok()) return text.status();
  auto model = parse_model_config(*text, (root / "config.json").string());
  if (!model.ok()) return model.status();
  out.model = std::move(*model);

  auto optional_file = [&](const char* name, auto parse, auto& into) -> absl::Status {
    const fs::path path = root / name;
    auto t = read_file(path.string());
    if (absl::IsNotFound(t.status())) {
      out.missing.emplace_back(name);
      return absl::OkStatus();
    }
    if (!t.ok()) return t.status();
    auto parsed = parse(*t, path.string());
    if (!parsed.ok()) return parsed.status();
    into = std::move(*parsed);
    return absl::OkStatus();
  };
  if (auto s = optional_file("preprocessor_config.json", parse_preprocessor_config, out.preprocessor); !s.ok()) return s;
  if (auto s = optional_file("generation_config.json", parse_generation_config, out.generation); !s.ok()) return s;
  if (auto s = optional_file("tokenizer_config.json", parse_tokenizer_config, out.tokenizer); !s.ok()) return s;
  return out;
}

}  // namespace cpm::core::io
