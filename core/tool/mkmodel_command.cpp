// SPDX-License-Identifier: Apache-2.0
//
// cpm-tool mkmodel: a checkpoint directory of the real MiniCPM-o-2.6 format with random weights.
#include <chrono>
#include <cstdio>

#include "commands.h"
#include "io/model_config.h"
#include "model/random_checkpoint.h"
#include "nlohmann/json.hpp"

namespace cpm::tool {
namespace {

int run(const std::string& out, const std::string& preset, const std::string& config_file,
        const std::string& tokenizer, const std::string& dtype, uint64_t seed) {
  const bool full = preset == "full";
  nlohmann::json config = nlohmann::json::parse(
      core::model::model_config_json(full ? core::model::full_config() : core::model::tiny_config()));
  if (!config_file.empty()) {
    auto text = core::io::read_file(config_file);
    if (!text.ok()) {
      std::fprintf(stderr, "cpm-tool: %s\n", std::string(text.status().message()).c_str());
      return 1;
    }
    try {
      config.merge_patch(nlohmann::json::parse(*text));  // the file's fields override the preset's
    } catch (const nlohmann::json::exception& e) {
      std::fprintf(stderr, "cpm-tool: %s: not valid JSON: %s\n", config_file.c_str(), e.what());
      return 1;
    }
  }
  auto parsed = core::io::parse_model_config(config.dump(), config_file.empty() ? preset : config_file);
  if (!parsed.ok()) {
    std::fprintf(stderr, "cpm-tool: %s\n", std::string(parsed.status().message()).c_str());
    return 1;
  }
  core::model::RandomCheckpointOptions options;
  options.dtype = dtype == "bf16" || (dtype.empty() && full) ? c10::ScalarType::BFloat16 : c10::ScalarType::Float;
  options.seed = seed;
  options.base_tokenizer_json = tokenizer;
  if (!full) options.max_shard_bytes = int64_t{32} << 20;  // several shards even when tiny
  const auto start = std::chrono::steady_clock::now();
  if (auto s = core::model::write_random_checkpoint(out, *parsed, options); !s.ok()) {
    std::fprintf(stderr, "cpm-tool: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("wrote %s (%s preset, random weights, %.1f s)\n", out.c_str(), preset.c_str(), seconds);
  return 0;
}

}  // namespace

void add_mkmodel_command(CLI::App& app, int& exit_code) {
  static std::string out, preset = "tiny", config, tokenizer = CPM_DEFAULT_QWEN_TOKENIZER, dtype;
  static uint64_t seed = 0;
  CLI::App* cmd = app.add_subcommand(
      "mkmodel", "Write a MiniCPM-o-2.6 checkpoint directory (real format, random weights)");
  cmd->add_option("--out", out, "directory to create (must not exist)")->required();
  cmd->add_option("--preset", preset, "tiny (CPU tests, demo) or full (the real 8B shapes; GPU only)")
      ->check(CLI::IsMember({"tiny", "full"}));
  cmd->add_option("--config", config, "a config.json whose fields override the preset's");
  cmd->add_option("--tokenizer", tokenizer, "the Qwen tokenizer.json to build on");
  cmd->add_option("--dtype", dtype, "f32 or bf16 (default: f32 for tiny, bf16 for full)")
      ->check(CLI::IsMember({"f32", "bf16"}));
  cmd->add_option("--seed", seed, "random seed (default 0)");
  cmd->footer("Example: cpm-tool mkmodel --out var/models/tiny --preset tiny");
  cmd->callback([&exit_code] { exit_code = run(out, preset, config, tokenizer, dtype, seed); });
}

}  // namespace cpm::tool
