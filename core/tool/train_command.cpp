// SPDX-License-Identifier: Apache-2.0
//
// cpm-tool train: the LoRA fine-tuning engine from the command line, without the daemon: a recipe
// dataset (conversation JSON / JSONL or image_path,text CSV) in, a PEFT adapter directory out.
// Progress goes to stderr one line per logging step (step, loss, lr, grad norm, tokens/s, elapsed,
// ETA); checkpoints land in OUT/checkpoint-<step>, and running the same command again resumes
// from the newest one.
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "common/host_memory.h"
#include "io/peft_adapter.h"
#include "model/load.h"
#include "tool/commands.h"
#include "tool/image_prompt.h"
#include "train/trainer.h"

namespace cpm::tool {
namespace {

struct TrainFlags {
  std::string model, data, out, device = "cpu", dtype;
  core::train::TrainConfig config;
  core::train::DataOptions data_options;
  core::train::ExampleOptions examples;
  int64_t logging_steps = 10;
  bool no_eval = false;
};

std::string duration(double seconds) {
  const auto s = static_cast<int64_t>(seconds);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", static_cast<long long>(s / 3600),
                static_cast<long long>(s / 60 % 60), static_cast<long long>(s % 60));
  return buf;
}

void print_eval(const core::train::EvalReport& e) {
  std::fprintf(stderr, "eval step %lld: loss %.4f, exact match %.3f, edit distance %.3f, BLEU-4 %.3f (%lld examples)\n",
               static_cast<long long>(e.step), e.loss, e.metrics.exact_match, e.metrics.normalized_edit_distance,
               e.metrics.bleu4, static_cast<long long>(e.metrics.count));
}

int run(TrainFlags& f) {
  auto load = load_options(f.device, f.dtype);
  if (!load.ok()) return fail(load.status());
  if (!load->device.is_cuda()) core::keep_freed_memory_for_reuse();
  auto loaded = core::model::load_model(f.model, *load);
  if (!loaded.ok()) return fail(loaded.status());
  const core::model::LoadedModel& m = **loaded;
  auto builder = core::train::ExampleBuilder::create(*m.tokenizer, m.chat_template, m.configs.preprocessor, f.examples);
  if (!builder.ok()) return fail(builder.status());
  if (f.no_eval) {
    f.data_options.split.eval_fraction.reset();
    f.data_options.split.eval_size = 0;
  }
  std::fprintf(stderr, "cpm-tool: checking %s\n", f.data.c_str());
  auto data = core::train::load_dataset(f.data, *builder, f.data_options);
  if (!data.ok()) return fail(data.status());
  if (!data->skipped.empty()) std::fprintf(stderr, "cpm-tool: skipped %zu bad records\n", data->skipped.size());
  f.config.output_dir = f.out;
  if (f.config.lora.base_model_name_or_path.empty()) f.config.lora.base_model_name_or_path = f.model;
  auto trainer = core::train::Trainer::create(m, *builder, data->split.train, data->split.eval, f.config);
  if (!trainer.ok()) return fail(trainer.status());
  core::train::Trainer& t = **trainer;
  std::fprintf(stderr, "cpm-tool: %zu train / %zu eval examples, %lld steps%s\n", data->split.train.size(),
               data->split.eval.size(), static_cast<long long>(t.total_steps()),
               t.resumed_from() > 0 ? (", resuming after step " + std::to_string(t.resumed_from())).c_str() : "");
  int64_t replayed = 0;  // steps replayed from CUDA graphs
  while (!t.done()) {
    auto r = t.step();
    if (!r.ok()) return fail(r.status());
    replayed += r->cuda_graph ? 1 : 0;
    if (r->step == 1 || r->step % f.logging_steps == 0 || r->step == r->total_steps) {
      const std::string graphs = f.config.cuda_graphs && f.device != "cpu"
                                     ? "  graph steps " + std::to_string(replayed) + "/" +
                                           std::to_string(r->step - t.resumed_from())
                                     : "";
      std::fprintf(stderr, "step %lld/%lld  loss %.4f  lr %.3e  grad norm %.3f  %.0f tok/s  elapsed %s  ETA %s%s\n",
                   static_cast<long long>(r->step), static_cast<long long>(r->total_steps), r->loss,
                   r->learning_rate, r->grad_norm, r->tokens_per_second, duration(r->elapsed_seconds).c_str(),
                   duration(r->eta_seconds).c_str(), graphs.c_str());
    }
    if (t.checkpoint_due()) {
      if (auto s = t.save_checkpoint(); !s.ok()) return fail(s);
    }
    if (t.eval_due() && !data->split.eval.empty()) {
      auto e = t.evaluate();
      if (!e.ok()) return fail(e.status());
      print_eval(*e);
    }
  }
  const std::string adapter = (std::filesystem::path(f.out) / "adapter").string();
  std::error_code ec;
  std::filesystem::remove_all(adapter, ec);  // a re-run of a finished job writes it again
  if (auto s = core::io::write_peft_adapter(adapter, t.adapter()); !s.ok()) return fail(s);
  std::printf("%s\n", adapter.c_str());
  return 0;
}

}  // namespace

void add_train_command(CLI::App& app, int& exit_code) {
  static TrainFlags f;
  CLI::App* cmd = app.add_subcommand(
      "train", "LoRA fine-tuning of a recipe dataset (JSON/JSONL/CSV) into a PEFT adapter; re-run to resume");
  cmd->add_option("--model", f.model, "checkpoint directory")->required();
  cmd->add_option("--data", f.data, "dataset file; image paths resolve against its folder")->required();
  cmd->add_option("--out", f.out, "output folder: checkpoint-<step>/ and, at the end, adapter/")->required();
  cmd->add_option("--device", f.device, "cpu or cuda (default cpu)");
  cmd->add_option("--dtype", f.dtype, "f32 or bf16 (default: bf16 on cuda, f32 on cpu)");
  auto& c = f.config;
  c.in_place = true;  // this process serves nothing: the base's own tensors are trained
  cmd->add_option("--max-steps", c.max_steps, "optimizer steps; 0 to train --num-epochs (default 1000)");
  cmd->add_option("--num-epochs", c.num_epochs, "passes over the data when --max-steps is 0 (default 1)");
  cmd->add_option("--lr", c.learning_rate, "peak learning rate (default 1e-6, the recipe's)");
  cmd->add_option("--batch-size", c.batch_size, "examples per micro-batch (default 1)");
  cmd->add_option("--grad-accum", c.gradient_accumulation_steps, "micro-batches per step (default 1)");
  cmd->add_option("--lora-r", c.lora.r, "LoRA rank (default 64)");
  cmd->add_option("--lora-alpha", c.lora.lora_alpha, "LoRA alpha (default 16)");
  cmd->add_option("--lora-dropout", c.lora.lora_dropout, "LoRA dropout (default 0.1)");
  c.lora.target_modules_regex = R"(llm\..*layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|o_proj))";
  cmd->add_option("--target-modules", *c.lora.target_modules_regex, "LoRA targets, a regex matched in full");
  c.lora.modules_to_save = {"embed_tokens", "resampler"};
  cmd->add_option("--modules-to-save", c.lora.modules_to_save, "trained in full (default embed_tokens resampler)");
  cmd->add_flag("!--no-tune-vision", c.tune_vision, "do not train the vision tower (vpm)");
  cmd->add_flag("!--no-cuda-graphs", c.cuda_graphs, "launch every kernel from the host (no CUDA graphs)");
  cmd->add_flag("!--copies", c.in_place,
                "train modules_to_save as copies beside the base model, as cpmd does (default: in place, "
                "0.9 GiB less on the real model; this process serves nothing else)");
  cmd->add_option("--save-steps", c.save_steps, "checkpoint every N steps (default 500)");
  cmd->add_option("--eval-steps", c.eval_steps, "evaluate every N steps and at the end (default 500)");
  cmd->add_option("--seed", c.seed, "data order, dropout, LoRA init (default 42)");
  cmd->add_option("--logging-steps", f.logging_steps, "a progress line every N steps (default 10)");
  cmd->add_option("--eval-size", f.data_options.split.eval_size, "examples held out (default 5%, at most 500)");
  cmd->add_flag("--no-eval", f.no_eval, "hold nothing out and skip evaluation");
  cmd->add_flag("--skip-bad-records", f.data_options.skip_bad_records, "skip and count bad records");
  cmd->add_option("--model-max-length", f.examples.model_max_length, "tokens per example (default 2048)");
  cmd->add_option("--max-slice-nums", f.examples.max_slice_nums, "most slices per image (default 9)");
  cmd->callback([&exit_code] { exit_code = run(f); });
}

}  // namespace cpm::tool
