// SPDX-License-Identifier: Apache-2.0
#include "model/adapter.h"

#include <ATen/TensorOperators.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/zeros.h>

#include <cmath>
#include <regex>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "model/minicpmo.h"

namespace cpm::core::model {
namespace {

std::string shape_str(at::IntArrayRef s) { return absl::StrCat("[", absl::StrJoin(s, ", "), "]"); }

// Every module of the architecture, containers included ("llm", "llm.model.layers.0", ...).
std::set<std::string> module_names(const io::ModelConfig& model) {
  std::set<std::string> out;
  for (const ParamSpec& spec : minicpmo_parameter_specs(model)) {
    for (size_t dot = spec.name.rfind('.'); dot != std::string::npos && dot > 0;
         dot = spec.name.rfind('.', dot - 1)) {
      out.insert(spec.name.substr(0, dot));
    }
  }
  return out;
}

// PEFT's list form: the module's name equals the entry or ends with "." + entry.
bool matches_name(const std::string& module, const std::string& entry) {
  return module == entry || absl::EndsWith(module, "." + entry);
}

struct LoraPair {
  std::string module;
  at::Tensor a, b;
};

// The adapter split into LoRA pairs and module copies, each checked against the base.
absl::Status split_adapter(const Parameters& base, const io::ModelConfig& model, const io::PeftAdapter& adapter,
                           std::vector<LoraPair>& lora, std::vector<std::pair<std::string, at::Tensor>>& copies) {
  const std::vector<std::string> capable = lora_capable_modules(model);
  const std::set<std::string> capable_set(capable.begin(), capable.end());
  std::map<std::string, LoraPair> pairs;
  for (const auto& [key, t] : adapter.tensors) {
    const bool is_a = absl::EndsWith(key, ".lora_A.weight"), is_b = absl::EndsWith(key, ".lora_B.weight");
    if (is_a || is_b) {
      const std::string module = key.substr(0, key.size() - std::string(".lora_A.weight").size());
      if (!capable_set.count(module)) {
        return absl::InvalidArgumentError(absl::StrCat("adapter tensor '", key, "': '", module,
                                                       "' is not a LoRA-capable module of this model "
                                                       "(the LLM decoder's projections are)"));
      }
      LoraPair& p = pairs[module];
      p.module = module;
      (is_a ? p.a : p.b) = t;
      continue;
    }
    if (!base.contains(key)) {
      return absl::InvalidArgumentError(absl::StrCat("adapter tensor '", key, "' names no parameter of the base model"));
    }
    const at::Tensor& w = base.get(key);
    if (!t.sizes().equals(w.sizes())) {
      return absl::InvalidArgumentError(absl::StrCat("adapter tensor '", key, "' has shape ", shape_str(t.sizes()),
                                                     " but the base model's is ", shape_str(w.sizes())));
    }
    copies.emplace_back(key, t);
  }
  const int64_t r = adapter.config.r;
  for (auto& [module, p] : pairs) {
    if (!p.a.defined() || !p.b.defined()) {
      return absl::InvalidArgumentError(absl::StrCat("adapter has only one of ", module, ".lora_A / lora_B"));
    }
    const at::Tensor& w = base.get(module + ".weight");  // [out, in]
    if (p.a.dim() != 2 || p.a.size(0) != r || p.a.size(1) != w.size(1)) {
      return absl::InvalidArgumentError(absl::StrCat(lora_a_name(module), " has shape ", shape_str(p.a.sizes()),
                                                     "; expected [", r, ", ", w.size(1), "] (r from adapter_config.json, "
                                                     "in_features from the base model)"));
    }
    if (p.b.dim() != 2 || p.b.size(0) != w.size(0) || p.b.size(1) != r) {
      return absl::InvalidArgumentError(absl::StrCat(lora_b_name(module), " has shape ", shape_str(p.b.sizes()),
                                                     "; expected [", w.size(0), ", ", r, "]"));
    }
    lora.push_back(std::move(p));
  }
  return absl::OkStatus();
}

// The base store with the adapter's module copies in place of the base tensors (on the base's
// device, in its dtype).
Parameters with_copies(const Parameters& base, const std::vector<std::pair<std::string, at::Tensor>>& copies) {
  Parameters out = base;
  for (const auto& [name, t] : copies) {
    const at::Tensor& w = base.get(name);
    out.set(name, t.to(w.device(), w.scalar_type()).contiguous());
  }
  return out;
}

}  // namespace

absl::StatusOr<std::vector<std::string>> resolve_lora_targets(const io::ModelConfig& model,
                                                              const io::PeftLoraConfig& config) {
  const std::vector<std::string> capable = lora_capable_modules(model);
  const std::set<std::string> capable_set(capable.begin(), capable.end());
  std::optional<std::regex> re;
  if (config.target_modules_regex) {
    try {
      re.emplace(*config.target_modules_regex, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      return absl::InvalidArgumentError(absl::StrCat("target_modules regex '", *config.target_modules_regex,
                                                     "' does not compile: ", e.what()));
    }
  } else if (config.target_modules.empty()) {
    return absl::InvalidArgumentError("target_modules is empty: give a regex or a list of module names");
  }
  const auto targeted = [&](const std::string& module) {
    if (re) return std::regex_match(module, *re);
    for (const std::string& entry : config.target_modules) {
      if (matches_name(module, entry)) return true;
    }
    return false;
  };
  std::vector<std::string> out;
  for (const std::string& module : module_names(model)) {
    if (!targeted(module)) continue;
    if (!capable_set.count(module)) {
      return absl::InvalidArgumentError(absl::StrCat("target_modules matches '", module,
                                                     "', which cannot take LoRA here: only the LLM decoder's "
                                                     "linear projections (self_attn.{q,k,v,o}_proj, "
                                                     "mlp.{gate,up,down}_proj) can"));
    }
  }
  for (const std::string& module : capable) {
    if (targeted(module)) out.push_back(module);
  }
  if (out.empty()) return absl::InvalidArgumentError("target_modules matches no module of the model");
  return out;
}

absl::StatusOr<std::vector<std::string>> resolve_modules_to_save(const Parameters& base,
                                                                 const std::vector<std::string>& modules) {
  std::vector<std::string> out;
  for (const std::string& entry : modules) {
    size_t found = 0;
    for (const auto& [name, t] : base.all()) {
      bool hit = false;
      for (size_t dot = name.rfind('.'); dot != std::string::npos && dot > 0 && !hit; dot = name.rfind('.', dot - 1)) {
        hit = matches_name(name.substr(0, dot), entry);
      }
      if (hit) {
        out.push_back(name);
        ++found;
      }
    }
    if (found == 0) return absl::InvalidArgumentError(absl::StrCat("modules_to_save entry '", entry, "' matches no module"));
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

absl::StatusOr<io::PeftAdapter> init_adapter(const Parameters& base, const io::ModelConfig& model,
                                             const io::PeftLoraConfig& config, uint64_t seed) {
  io::PeftAdapter adapter;
  adapter.config = config;
  auto targets = resolve_lora_targets(model, config);
  if (!targets.ok()) return targets.status();
  auto saved = resolve_modules_to_save(base, config.modules_to_save);
  if (!saved.ok()) return saved.status();
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (const std::string& module : *targets) {
    const at::Tensor& w = base.get(module + ".weight");  // [out, in]
    const double bound = 1.0 / std::sqrt(static_cast<double>(w.size(1)));
    adapter.tensors[lora_a_name(module)] = at::empty({config.r, w.size(1)}, at::kFloat).uniform_(-bound, bound, gen);
    adapter.tensors[lora_b_name(module)] = at::zeros({w.size(0), config.r}, at::kFloat);
  }
  for (const std::string& name : *saved) adapter.tensors[name] = base.get(name).detach().clone();
  return adapter;
}

absl::StatusOr<Parameters> apply_adapter(const Parameters& base, const io::ModelConfig& model,
                                         const io::PeftAdapter& adapter, LoraPrecision precision) {
  std::vector<LoraPair> lora;
  std::vector<std::pair<std::string, at::Tensor>> copies;
  if (auto s = split_adapter(base, model, adapter, lora, copies); !s.ok()) return s;
  Parameters out = with_copies(base, copies);
  for (const LoraPair& p : lora) {
    const at::Tensor& w = base.get(p.module + ".weight");
    const c10::ScalarType dtype = precision == LoraPrecision::kFloat32 ? at::kFloat : w.scalar_type();
    out.set(lora_a_name(p.module), p.a.to(w.device(), dtype).contiguous());
    out.set(lora_b_name(p.module), p.b.to(w.device(), dtype).contiguous());
  }
  if (precision == LoraPrecision::kModelDtype) {
    // Serving: the A's of q/k/v (and of gate/up) in one buffer, which the inference way multiplies
    // at once (model/qwen2.h) without a copy of its own.
    for (const auto& group : qwen2_stacked_projections(model, "llm")) {
      std::vector<std::string> names;
      for (const std::string& weight : group) {
        const std::string module = weight.substr(0, weight.rfind('.'));
        if (absl::EndsWith(weight, ".weight") && out.contains(lora_a_name(module))) names.push_back(lora_a_name(module));
      }
      if (!names.empty()) stack_rows(out, names);
    }
  }
  return out;
}

absl::StatusOr<Parameters> merge_adapter(const Parameters& base, const io::ModelConfig& model,
                                         const io::PeftAdapter& adapter) {
  std::vector<LoraPair> lora;
  std::vector<std::pair<std::string, at::Tensor>> copies;
  if (auto s = split_adapter(base, model, adapter, lora, copies); !s.ok()) return s;
  Parameters out = with_copies(base, copies);
  const double scaling = adapter.config.scaling();
  for (const LoraPair& p : lora) {
    const at::Tensor& w = base.get(p.module + ".weight");
    const at::Tensor delta = at::matmul(p.b.to(w.device(), at::kFloat), p.a.to(w.device(), at::kFloat)) * scaling;
    out.set(p.module + ".weight", (w.to(at::kFloat) + delta).to(w.scalar_type()));
  }
  // The merged weights back into stacked buffers (the inference way's layout; a no-op for groups
  // the adapter left alone).
  for (const auto& group : qwen2_stacked_projections(model, "llm")) stack_rows(out, group);
  return out;
}

RunOptions run_options(const io::PeftLoraConfig& config, bool training) {
  RunOptions o;
  o.lora_scaling = config.scaling();
  o.lora_dropout = config.lora_dropout;
  o.training = training;
  return o;
}

}  // namespace cpm::core::model
