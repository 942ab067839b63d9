// SPDX-License-Identifier: Apache-2.0
//
// One LoRA training step of the reference recipe on the real model shapes, timed as
// ../shared/bench/train_step.py times the Transformers + PEFT baseline: batch 1, one 448x448 image
// (1,024 patches, 64 placeholder tokens) or ten, the last 100 positions labelled, LoRA r 64 /
// alpha 16 / dropout 0.1 on q/k/v/o, vision tower and resampler trained in full, gradient
// checkpointing, AdamW (lr 1e-6, betas 0.9/0.95, wd 0.1), clipping at 1.0; 5 warm-up steps, then
// the median of 20, then 3 steps under the profiler for the GPU kernel time. Steps replay CUDA
// graphs from the second on (train/step_graph.h); --eager launches every kernel from the host.
// Not a test.
//   train_bench --model DIR [--configs T256_1img,T512_1img,T1024_10img] [--embed] [--eager] [--tune-llm]
//               [--copies] > results.jsonl
// The vision tower and resampler train in the base's own tensors (TrainConfig::in_place) unless
// --copies: then beside them, as the daemon trains while it serves the base model. In place, each
// config starts from the weights the configs before it trained (the timing does not depend on them).
#include <ATen/ops/randint.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/full.h>
#include <ATen/ops/ones.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "bench/bench_util.h"
#include "common/device.h"
#include "model/load.h"
#include "train/trainer.h"

namespace {

using namespace cpm;
using nlohmann::json;

// A batch of the baseline's shape: T tokens with `images` spans of query_num placeholder tokens
// from position 16 on, random ids elsewhere, the last 100 positions labelled.
core::train::Batch synthetic_batch(int64_t t, int images, int64_t query_num, int patch) {
  core::train::Batch b;
  b.input_ids = at::randint(1000, 150000, {1, t}, at::kLong);
  b.labels = at::full({1, t}, core::train::kIgnoreIndex, at::kLong);
  b.labels.narrow(1, t - 100, 100).copy_(at::randint(1000, 150000, {1, 100}, at::kLong));
  b.position_ids = at::arange(t, at::kLong).unsqueeze(0);
  b.attention_mask = at::ones({1, t}, at::kBool);
  b.pixel_values.resize(1);
  b.tgt_sizes.resize(1);
  b.image_bound.resize(1);
  for (int k = 0; k < images; ++k) {
    b.pixel_values[0].push_back(at::randn({3, patch, 1024 * patch}));
    b.tgt_sizes[0].push_back({32, 32});
    const int64_t start = 16 + k * (query_num + 2);
    b.image_bound[0].emplace_back(start, start + query_num);
  }
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("LoRA training step benchmark (GPU)");
  std::string model_dir, configs = "T256_1img,T512_1img,T1024_10img";
  bool embed = false, eager = false, tune_llm = false, copies = false;
  int warmup = 5, steps = 20, profiled = 3;
  std::string device = "cuda:0";
  app.add_option("--model", model_dir, "checkpoint directory")->required();
  app.add_option("--device", device, "cuda:0, or cpu for a smoke test");
  app.add_option("--configs", configs, "comma-separated T<tokens>_<n>img");
  app.add_flag("--embed", embed, "train embed_tokens too (the recipe's modules_to_save)");
  app.add_flag("--eager", eager, "no CUDA graphs");
  app.add_flag("--tune-llm", tune_llm, "full fine-tuning of the LLM instead of LoRA (the recipe's tune_llm)");
  app.add_flag("--copies", copies,
               "train the vision tower and resampler as copies beside the base, as cpmd does while it serves "
               "(default: in place, as cpm-tool train and the baseline do)");
  app.add_option("--steps", steps);
  CLI11_PARSE(app, argc, argv);

  double load_s = 0;
  const std::unique_ptr<core::model::LoadedModel> loaded = bench::load_model(model_dir, device, load_s);
  if (!loaded) return 1;
  const core::model::LoadedModel& m = *loaded;
  std::fprintf(stderr, "loaded %.2f B parameters in %.1f s\n", m.report.num_parameters / 1e9, load_s);
  auto builder = core::train::ExampleBuilder::create(*m.tokenizer, m.chat_template, m.configs.preprocessor, {});
  if (!builder.ok()) return 1;

  std::stringstream list(configs);
  for (std::string name; std::getline(list, name, ',');) {
    int64_t t = 0;
    int images = 0;
    if (std::sscanf(name.c_str(), "T%ld_%dimg", &t, &images) != 2) return 2;
    core::train::TrainConfig c;
    c.lora.r = 64;
    c.lora.lora_alpha = 16;
    c.lora.lora_dropout = 0.1;
    c.lora.target_modules_regex = R"(llm\..*layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|o_proj))";
    c.lora.modules_to_save = {"resampler"};
    if (embed) c.lora.modules_to_save.push_back("embed_tokens");
    c.max_steps = warmup + steps + profiled + 1;
    c.cuda_graphs = !eager;
    c.in_place = !copies;
    c.use_lora = !tune_llm;
    c.tune_llm = tune_llm;
    c.output_dir = (std::filesystem::temp_directory_path() / ("cpm-train-bench-" + name)).string();
    std::filesystem::remove_all(c.output_dir);
    core::train::DatasetRecord unused;  // the benchmark feeds batches directly
    auto trainer = core::train::Trainer::create(m, *builder, {unused}, {}, c);
    if (!trainer.ok()) {
      std::fprintf(stderr, "%s\n", std::string(trainer.status().message()).c_str());
      return 1;
    }
    const std::vector<core::train::Batch> batch{synthetic_batch(t, images, m.configs.model.query_num, m.configs.model.vision.patch_size)};
    int replayed = 0;
    const auto one = [&] {
      auto r = (*trainer)->step(batch);
      if (!r.ok()) {
        std::fprintf(stderr, "%s\n", std::string(r.status().message()).c_str());
        std::exit(1);
      }
      core::cuda_synchronize(0);
      replayed += r->cuda_graph ? 1 : 0;
    };
    for (int i = 0; i < warmup; ++i) one();
    core::reset_cuda_peak_memory(0);
    std::vector<double> times;
    for (int i = 0; i < steps; ++i) {
      const auto s = std::chrono::steady_clock::now();
      one();
      times.push_back(bench::seconds_since(s));
    }
    const core::CudaMemory mem = core::cuda_memory(0);
    const double kernel = bench::gpu_kernel_seconds([&] {
      for (int i = 0; i < profiled; ++i) one();
    });
    const double step = bench::median(times);
    const json out = {{"config", name},
                      {"tokens", t},
                      {"images", images},
                      {"embed_tokens_trained", embed},
                      {"in_place", !copies},
                      {"tune_llm", tune_llm},
                      {"cuda_graphs", !eager},
                      {"steps_replayed", replayed},
                      {"step_ms", step * 1e3},
                      {"step_ms_min", *std::min_element(times.begin(), times.end()) * 1e3},
                      {"tokens_per_s", static_cast<double>(t) / step},
                      {"gpu_kernel_ms_per_step", kernel < 0 ? json(nullptr) : json(kernel / profiled * 1e3)},
                      {"peak_allocated_gib", mem.peak_allocated_bytes / double(1 << 30)},
                      {"peak_reserved_gib", mem.peak_reserved_bytes / double(1 << 30)}};
    std::printf("%s\n", out.dump().c_str());
    std::fflush(stdout);
    std::filesystem::remove_all(c.output_dir);
  }
  return 0;
}
