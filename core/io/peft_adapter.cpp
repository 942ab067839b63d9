// SPDX-License-Identifier: Apache-2.0
#include "io/peft_adapter.h"

#include <cmath>
#include <filesystem>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "io/atomic_file.h"
#include "io/model_config.h"
#include "io/safetensors.h"
#include "nlohmann/json.hpp"

namespace cpm::core::io {
namespace fs = std::filesystem;
using nlohmann::json;

double PeftLoraConfig::scaling() const {
  return use_rslora ? lora_alpha / std::sqrt(static_cast<double>(r)) : lora_alpha / static_cast<double>(r);
}

absl::StatusOr<PeftLoraConfig> parse_peft_config(const std::string& text, const std::string& source) {
  const json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!doc.is_object()) return absl::InvalidArgumentError(absl::StrCat(source, ": not a JSON object"));
  const auto bad = [&source](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", why));
  };
  try {
    if (doc.value("peft_type", std::string("LORA")) != "LORA") {
      return bad(absl::StrCat("peft_type is '", doc["peft_type"].get<std::string>(), "'; only LORA adapters are supported"));
    }
    PeftLoraConfig c;
    c.r = doc.value("r", c.r);
    c.lora_alpha = doc.value("lora_alpha", c.lora_alpha);
    c.lora_dropout = doc.value("lora_dropout", c.lora_dropout);
    if (c.r <= 0) return bad(absl::StrCat("r must be positive, got ", c.r));
    if (!(c.lora_dropout >= 0 && c.lora_dropout < 1)) return bad("lora_dropout must be in [0, 1)");
    if (const auto t = doc.find("target_modules"); t != doc.end() && !t->is_null()) {
      if (t->is_string()) {
        c.target_modules_regex = t->get<std::string>();
      } else {
        c.target_modules = t->get<std::vector<std::string>>();
      }
    }
    if (const auto m = doc.find("modules_to_save"); m != doc.end() && !m->is_null()) {
      c.modules_to_save = m->get<std::vector<std::string>>();
    }
    c.use_rslora = doc.value("use_rslora", false);
    if (const auto b = doc.find("base_model_name_or_path"); b != doc.end() && b->is_string()) {
      c.base_model_name_or_path = b->get<std::string>();
    }
    // Options that change the computation and that cpmd does not implement.
    if (doc.value("use_dora", false)) return bad("use_dora is true; DoRA adapters are not supported");
    if (doc.value("fan_in_fan_out", false)) return bad("fan_in_fan_out is true; not supported for these Linear layers");
    if (doc.value("bias", std::string("none")) != "none") return bad("bias must be \"none\"");
    for (const char* key : {"rank_pattern", "alpha_pattern"}) {
      if (const auto p = doc.find(key); p != doc.end() && !p->is_null() && !p->empty()) {
        return bad(absl::StrCat(key, " is set; per-module ranks or alphas are not supported"));
      }
    }
    if (const auto l = doc.find("layers_to_transform"); l != doc.end() && !l->is_null()) {
      return bad("layers_to_transform is set; not supported");
    }
    // Later PEFT versions (0.21 writes them all, null or false by default) add variants whose
    // tensors can look like plain LoRA while the computation differs.
    for (const char* key : {"lora_bias", "use_qalora", "use_bdlora"}) {
      if (const auto f = doc.find(key); f != doc.end() && !f->is_null() && *f != false) {
        return bad(absl::StrCat(key, " is set; this LoRA variant is not supported"));
      }
    }
    for (const char* key : {"alora_invocation_tokens", "arrow_config", "layer_replication", "target_parameters",
                            "trainable_token_indices"}) {
      if (const auto f = doc.find(key); f != doc.end() && !f->is_null()) {
        return bad(absl::StrCat(key, " is set; this LoRA variant is not supported"));
      }
    }
    return c;
  } catch (const json::exception& e) {
    return bad(absl::StrCat("malformed field: ", e.what()));
  }
}

std::string peft_config_json(const PeftLoraConfig& c) {
  json doc = {
      {"peft_type", "LORA"},
      {"task_type", nullptr},
      {"r", c.r},
      {"lora_alpha", c.lora_alpha},
      {"lora_dropout", c.lora_dropout},
      {"bias", "none"},
      {"fan_in_fan_out", false},
      {"use_rslora", c.use_rslora},
      {"use_dora", false},
      {"init_lora_weights", true},
      {"layers_to_transform", nullptr},
      {"layers_pattern", nullptr},
      {"rank_pattern", json::object()},
      {"alpha_pattern", json::object()},
      {"modules_to_save", c.modules_to_save.empty() ? json(nullptr) : json(c.modules_to_save)},
      {"base_model_name_or_path", c.base_model_name_or_path},
      {"inference_mode", true},
      {"revision", nullptr},
  };
  doc["target_modules"] = c.target_modules_regex ? json(*c.target_modules_regex) : json(c.target_modules);
  return doc.dump(2) + "\n";
}

absl::StatusOr<PeftAdapter> read_peft_adapter(const std::string& dir) {
  const std::string config_path = (fs::path(dir) / "adapter_config.json").string();
  auto text = read_file(config_path);
  if (!text.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(dir, " is not a PEFT adapter: ", text.status().message()));
  }
  PeftAdapter adapter;
  auto config = parse_peft_config(*text, config_path);
  if (!config.ok()) return config.status();
  adapter.config = *std::move(config);

  const std::string weights = (fs::path(dir) / "adapter_model.safetensors").string();
  std::error_code ec;
  if (!fs::exists(weights, ec)) {
    return absl::InvalidArgumentError(absl::StrCat(dir, ": no adapter_model.safetensors (adapter_model.bin "
                                                   "pickles are not read; re-save with safe_serialization)"));
  }
  auto file = SafetensorsFile::open(weights);
  if (!file.ok()) return file.status();
  for (const TensorInfo& info : (*file)->header().tensors) {
    const std::string& key = info.name;
    if (!absl::StartsWith(key, kPeftKeyPrefix)) {
      return absl::InvalidArgumentError(absl::StrCat(weights, ": key '", key, "' does not start with '",
                                                     kPeftKeyPrefix, "'"));
    }
    auto t = (*file)->tensor(key);
    if (!t.ok()) return t.status();
    // Copied out of the mapping so the adapter outlives the file.
    adapter.tensors[key.substr(std::string(kPeftKeyPrefix).size())] = t->clone();
  }
  return adapter;
}

absl::Status write_peft_adapter(const std::string& dir, const PeftAdapter& adapter) {
  auto staged = staging_directory(dir);
  if (!staged.ok()) return staged.status();
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& [name, t] : adapter.tensors) {
    tensors.emplace_back(kPeftKeyPrefix + name, t.detach().cpu().contiguous());
  }
  absl::Status s = write_safetensors((fs::path(*staged) / "adapter_model.safetensors").string(), tensors,
                                     {{"format", "pt"}});
  if (s.ok()) s = write_file_atomic((fs::path(*staged) / "adapter_config.json").string(), peft_config_json(adapter.config));
  if (s.ok()) s = publish_directory(*staged, dir);
  if (!s.ok()) {
    std::error_code ec;
    fs::remove_all(*staged, ec);
  }
  return s;
}

}  // namespace cpm::core::io
