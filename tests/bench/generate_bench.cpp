// SPDX-License-Identifier: Apache-2.0
//
// Greedy generation on the real model shapes, measured as ../shared/bench/generate.py measures
// transformers' generate(): each request is one 448x448 image (1,024 patches -> 64 placeholder
// tokens) inside a 94-token prompt, exactly 64 new tokens (no stop ids), batches of 1, 8 and 32
// requests; the bare model and the same model with an unmerged LoRA adapter (r 64, alpha 16 on
// q/k/v/o in the model's dtype, as cpmd serves adapters; lora_B ~ N(0, 1e-3) so it changes the
// output), and a batch whose rows are spread over four such adapters (one forward pass with
// per-row LoRA, runtime/mixed_adapters.h; at batch 1 it is the one-adapter case). Time to first
// token covers the vision tower, the resampler and the prefill; decode ms/token =
// (t(64 tokens) - t(1 token)) / 63, the baseline's GPU-time formula, here on wall time.
// Each variant decodes with the static cache and CUDA graphs kept across requests (the default on
// CUDA: the warm-up request captures, the timed ones replay); --eager adds the same without graphs.
// 1 warm-up, then the median of 5. Not a test.
//   generate_bench (--model DIR | --random-full) [--batches 1,8,32] [--eager] > results.jsonl
// --random-full draws the full preset's weights on the device (as cpm-tool mkmodel writes them:
// normal(0, 0.02), norms one, biases zero; laid out as load_model lays them out) instead of reading
// a checkpoint.
#include <ATen/TensorOperators.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/randn_like.h>
#include <ATen/ops/zeros.h>
#include <c10/core/GradMode.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <map>
#include <sstream>

#include "bench/bench_util.h"
#include "common/device.h"
#include "model/adapter.h"
#include "model/fused_ops.h"
#include "model/load.h"
#include "model/random_checkpoint.h"
#include "runtime/mixed_adapters.h"
#include "serve/static_decode.h"

namespace {

using namespace cpm;
using nlohmann::json;

constexpr int64_t kPromptTokens = 94, kImageStart = 16, kNewTokens = 64;

struct Run {
  double ttft = 0, total = 0;
  std::vector<int32_t> first_row;
};

// B requests: vision + resampler over B copies of the image, B prompt embeddings, then decoding.
// Row b runs on models[b * models.size() / B] (consecutive rows share a model, as the engine
// orders them); several models decode as one mixed-adapter pass.
Run run(const std::vector<const core::model::MiniCPMO*>& models, core::runtime::MixedAdapterModels& mixer,
        const at::Tensor& pixels, const at::Tensor& ids, int batch, int new_tokens, bool graph) {
  const auto start = std::chrono::steady_clock::now();
  const int64_t q = 64;
  std::vector<const core::model::MiniCPMO*> rows;
  for (int b = 0; b < batch; ++b) rows.push_back(models[static_cast<size_t>(b) * models.size() / batch]);
  std::vector<at::Tensor> prompts;
  std::vector<const core::model::Qwen2ForCausalLM*> llms;
  for (int b = 0; b < batch;) {
    int n = 1;  // rows of this model: one vision batch
    while (b + n < batch && rows[b + n] == rows[b]) ++n;
    const std::vector<at::Tensor> strips(n, pixels);
    const std::vector<std::array<int64_t, 2>> sizes(n, {32, 32});
    const at::Tensor features = rows[b]->encode_images(strips, sizes);  // [n, 64, D]
    for (int k = 0; k < n; ++k, ++b) {
      prompts.push_back(rows[b]->prompt_embeddings(ids, {{kImageStart, kImageStart + q}}, features.narrow(0, k, 1))[0]);
      llms.push_back(&rows[b]->llm());
    }
  }
  core::serve::GreedyOptions options;
  options.max_new_tokens = new_tokens;
  const auto out = core::serve::generate_greedy_batch_static(mixer.get(llms), prompts, options, graph);
  core::cuda_synchronize(0);
  Run r;
  r.total = bench::seconds_since(start);
  r.first_row = out.front().tokens;
  return r;
}

// The full preset with random weights on `device` in bf16, laid out as load_model lays it out (the
// stacked projections in one buffer each). Weights are drawn from the device's generator.
std::unique_ptr<core::model::LoadedModel> random_full_model(const std::string& device, double& seconds) {
  const auto start = std::chrono::steady_clock::now();
  auto m = std::make_unique<core::model::LoadedModel>();
  m->configs.model = core::model::full_config();
  const auto options = at::TensorOptions().device(c10::Device(device)).dtype(at::kBFloat16);
  for (const core::model::ParamSpec& spec : core::model::minicpmo_parameter_specs(m->configs.model)) {
    at::Tensor t = spec.init == core::model::Init::kOnes    ? at::ones(spec.shape, options)
                   : spec.init == core::model::Init::kZeros ? at::zeros(spec.shape, options)
                                                            : at::empty(spec.shape, options).normal_(0.0, 0.02);
    m->report.num_parameters += t.numel();
    m->params.set(spec.name, std::move(t));
  }
  for (const auto& group : core::model::qwen2_stacked_projections(m->configs.model, "llm")) {
    core::model::stack_rows(m->params, group);
  }
  m->model = std::make_unique<core::model::MiniCPMO>(m->params, m->configs.model);
  core::cuda_synchronize(0);
  seconds = bench::seconds_since(start);
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("generation benchmark (GPU)");
  std::string model_dir, batches = "1,8,32";
  int repeats = 5;
  std::string device = "cuda:0";
  bool random_full = false, eager = false, kernels = false;
  app.add_option("--model", model_dir, "checkpoint directory");
  app.add_flag("--random-full", random_full, "the full preset with random weights, drawn on the device");
  app.add_option("--device", device, "cuda:0, or cpu for a smoke test");
  app.add_option("--batches", batches);
  app.add_option("--repeats", repeats);
  app.add_flag("--eager", eager, "also decode without CUDA graphs");
  app.add_flag("--kernels", kernels, "first, the GPU kernels of one batch-1 base request, by name, per decode step");
  CLI11_PARSE(app, argc, argv);
  if (model_dir.empty() == !random_full) {
    std::fprintf(stderr, "give one of --model DIR and --random-full\n");
    return 2;
  }
  at::NoGradGuard no_grad;

  double load_s = 0;
  const std::unique_ptr<core::model::LoadedModel> loaded =
      random_full ? random_full_model(device, load_s) : bench::load_model(model_dir, device, load_s);
  if (!loaded) return 1;
  const core::model::LoadedModel& m = *loaded;
  // fused_kernels: model/fused_ops.h runs (built with nvcc, not turned off by CPM_FUSED_KERNELS=0).
  std::printf("%s\n", json({{"load_s", load_s}, {"parameters", m.report.num_parameters},
                            {"fused_kernels", core::model::fused::applies(m.params.get("llm.model.norm.weight"))},
                            {"allocated_gib", core::cuda_memory(0).allocated_bytes / double(1 << 30)}})
                          .dump()
                          .c_str());

  core::io::PeftLoraConfig lora;
  lora.r = 64;
  lora.lora_alpha = 16;
  lora.lora_dropout = 0.1;
  lora.target_modules_regex = R"(llm\..*layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|o_proj))";
  // Four adapters of the same shape (different seeds): the first is the single-adapter variant.
  std::vector<core::model::Parameters> adapted;
  std::vector<std::unique_ptr<core::model::MiniCPMO>> with_lora;
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    auto adapter = core::model::init_adapter(m.params, m.configs.model, lora, seed);
    if (!adapter.ok()) return 1;
    for (auto& [name, t] : adapter->tensors) {
      if (name.find("lora_B") != std::string::npos) t = at::randn_like(t) * 1e-3;
    }
    auto params = core::model::apply_adapter(m.params, m.configs.model, *adapter, core::model::LoraPrecision::kModelDtype);
    if (!params.ok()) return 1;
    adapted.push_back(*std::move(params));
    with_lora.push_back(std::make_unique<core::model::MiniCPMO>(adapted.back(), m.configs.model,
                                                                core::model::run_options(lora, false)));
  }
  core::runtime::MixedAdapterModels mixer(m.model->llm());

  const at::Tensor pixels = at::randn({3, 14, 1024 * 14}).to(m.params.get("llm.model.norm.weight").device(), m.params.get("llm.model.norm.weight").scalar_type());
  const at::Tensor ids = at::randint(1000, 150000, {kPromptTokens}, at::kLong).to(m.params.get("llm.model.norm.weight").device());
  {
    // The issue's floor: the LLM's weights (15.2 GB) over the measured device copy bandwidth
    // (bytes read + written by copying 2 GiB, best of 10).
    const at::Tensor src = at::empty({int64_t{1} << 30}, at::TensorOptions().dtype(at::kBFloat16).device(c10::Device(device)));
    at::Tensor dst = at::empty_like(src);
    double best = 1e9;
    for (int i = 0; i < 11; ++i) {
      core::cuda_synchronize(0);
      const auto s0 = std::chrono::steady_clock::now();
      dst.copy_(src);
      core::cuda_synchronize(0);
      if (i > 0) best = std::min(best, bench::seconds_since(s0));
    }
    const double tb_s = 2.0 * static_cast<double>(src.nbytes()) / best / 1e12;
    std::printf("%s\n", json({{"copy_bandwidth_tb_s", tb_s}, {"floor_ms", 15.2e9 / (tb_s * 1e12) * 1e3}}).dump().c_str());
  }
  if (kernels) {
    // What one decode step's GPU time is made of: a 64-token request minus a 1-token one, per step.
    const std::vector<const core::model::MiniCPMO*> base = {m.model.get()};
    run(base, mixer, pixels, ids, 1, kNewTokens, true);  // captures the graphs
    std::map<std::string, bench::KernelTime> first;
    for (const auto& k : bench::gpu_kernel_table([&] { run(base, mixer, pixels, ids, 1, 1, true); })) first[k.name] = k;
    double step_total = 0;
    std::vector<json> rows;
    for (const auto& k : bench::gpu_kernel_table([&] { run(base, mixer, pixels, ids, 1, kNewTokens, true); })) {
      const auto it = first.find(k.name);
      const double s = (k.seconds - (it == first.end() ? 0 : it->second.seconds)) / (kNewTokens - 1);
      const double calls = static_cast<double>(k.calls - (it == first.end() ? 0 : it->second.calls)) / (kNewTokens - 1);
      step_total += s;
      if (rows.size() < 40) rows.push_back({{"kernel", k.name.substr(0, 160)}, {"us_per_step", s * 1e6}, {"calls_per_step", calls}});
    }
    std::printf("%s\n", json({{"decode_step_kernel_us", step_total * 1e6}}).dump().c_str());
    for (const json& r : rows) std::printf("%s\n", r.dump().c_str());
    std::fflush(stdout);
  }
  std::vector<int32_t> base_tokens;
  std::vector<std::string> variants = {"base_cuda_graph", "lora_unmerged_cuda_graph", "lora_mixed4_cuda_graph"};
  if (eager) variants.insert(variants.begin(), {"base", "lora_unmerged"});
  for (const std::string& variant : variants) {
    std::vector<const core::model::MiniCPMO*> models = {m.model.get()};
    if (variant.rfind("lora_unmerged", 0) == 0) models = {with_lora.front().get()};
    if (variant.rfind("lora_mixed4", 0) == 0) {
      models.clear();
      for (const auto& w : with_lora) models.push_back(w.get());
    }
    const bool graph = variant.find("cuda_graph") != std::string::npos;
    std::stringstream list(batches);
    for (std::string item; std::getline(list, item, ',');) {
      const int batch = std::stoi(item);
      run(models, mixer, pixels, ids, batch, kNewTokens, graph);  // warm-up
      core::reset_cuda_peak_memory(0);
      std::vector<double> ttft, total;
      Run last;
      for (int i = 0; i < repeats; ++i) {
        ttft.push_back(run(models, mixer, pixels, ids, batch, 1, graph).total);
        last = run(models, mixer, pixels, ids, batch, kNewTokens, graph);
        total.push_back(last.total);
      }
      if (batch == 1 && variant == variants.front()) base_tokens = last.first_row;
      const double t64 = bench::median(total), t1 = bench::median(ttft);
      const json out = {{"variant", variant},
                        {"batch", batch},
                        {"ttft_ms", t1 * 1e3},
                        {"decode_ms_per_token", (t64 - t1) / (kNewTokens - 1) * 1e3},
                        {"request_ms", t64 * 1e3},
                        {"tokens_per_s", batch * kNewTokens / t64},
                        {"requests_per_s", batch / t64},
                        {"new_tokens", last.first_row.size()},
                        {"differs_from_base", !base_tokens.empty() && last.first_row != base_tokens},
                        {"first_tokens", std::vector<int32_t>(last.first_row.begin(), last.first_row.begin() + 8)},
                        {"peak_allocated_gib", core::cuda_memory(0).peak_allocated_bytes / double(1 << 30)},
                        {"cached_graphs", core::serve::shared_decode_graphs().graphs()}};
      std::printf("%s\n", out.dump().c_str());
      std::fflush(stdout);
    }
  }
  return 0;
}
