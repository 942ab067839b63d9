// SPDX-License-Identifier: Apache-2.0
//
// cpm-tool generate: one image (and an optional question) in, the model's answer out, decoded with
// the KV cache (greedy, sampled with --sample, or beam search with --num-beams) and post-processed
// as the reference chat() does; --adapter answers with a PEFT LoRA adapter on the weights.
#include <chrono>
#include <cstdio>

#include <ATen/ops/tensor.h>

#include "commands.h"
#include "image_prompt.h"
#include "common/guard.h"
#include "model/load.h"
#include "serve/answer_text.h"
#include "serve/beam_search.h"
#include "serve/generation.h"

namespace cpm::tool {
namespace {

// Decoding choices beyond the greedy default.
struct Decoding {
  bool sample = false;
  core::serve::SamplingOptions sampling;
  uint64_t seed = 0;
  int num_beams = 1;  // > 1: beam search, as chat(sampling=False) with 3
  // chat(sampling=False)'s 1.2 unless --repetition-penalty is given.
  double beam_repetition_penalty = core::serve::BeamSearchOptions{}.repetition_penalty;
};

// A PEFT adapter to run with: unmerged unless `merge`.
struct AdapterChoice {
  std::string dir;  // empty: the base model
  bool merge = false;
};

int run(const std::string& model_dir, const std::string& image_path, const std::string& text,
        int max_new_tokens, const std::string& device, const std::string& dtype, const Decoding& decoding,
        const AdapterChoice& adapter) {
  auto where = load_options(device, dtype);
  if (!where.ok()) return fail(where.status());
  const core::model::LoadOptions& load = *where;
  const auto t0 = std::chrono::steady_clock::now();
  auto loaded = core::model::load_model(model_dir, load);
  if (!loaded.ok()) return fail(std::string(loaded.status().message()));
  const double load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const core::model::LoadedModel& m = **loaded;
  auto adapted = adapted_model(m, adapter.dir, adapter.merge);
  if (!adapted.ok()) return fail(adapted.status());
  const core::model::MiniCPMO& model = *adapted ? **adapted : *m.model;
  auto prepared = prepare_image_prompt(m, image_path, text);
  if (!prepared.ok()) return fail(std::string(prepared.status().message()));
  const core::io::PreprocessedImage* pre = &prepared->image;
  const core::io::Prompt* prompt = &prepared->prompt;

  // Stops: <|im_end|> and <|endoftext|>, from the tokenizer.
  core::serve::GreedyOptions options;
  options.max_new_tokens = max_new_tokens;
  for (const char* stop : {"<|im_end|>", "<|endoftext|>"}) {
    if (const auto id = m.tokenizer->token_to_id(stop)) options.stop_ids.push_back(*id);
  }
  core::serve::Generation generation;
  double generate_seconds = 0;
  const absl::Status ran = core::guarded("generate", [&] {
    const auto start = std::chrono::steady_clock::now();
    const at::Tensor features = model.encode_images(pre->pixel_values, pre->tgt_sizes);
    const at::Tensor ids =
        at::tensor(std::vector<int64_t>(prompt->input_ids.begin(), prompt->input_ids.end())).to(load.device);
    const at::Tensor embeds = model.prompt_embeddings(ids, prompt->image_bound, features);
    if (decoding.num_beams > 1) {
      core::serve::BeamSearchOptions beam;
      beam.num_beams = decoding.num_beams;
      beam.repetition_penalty = decoding.beam_repetition_penalty;
      generation = core::serve::generate_beam(model.llm(), embeds, options, beam).best;
    } else if (decoding.sample) {
      generation = core::serve::generate_sampled(model.llm(), embeds, options, decoding.sampling, decoding.seed);
    } else {
      generation = core::serve::generate_greedy(model.llm(), embeds, options);
    }
    generate_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return absl::OkStatus();
  });
  if (!ran.ok()) return fail(std::string(ran.message()));
  std::fprintf(stderr, "cpm-tool: loaded %.2f B parameters in %.1f s; %zu prompt tokens, %zu image(s), "
               "%zu new tokens in %.2f s on %s\n",
               m.report.num_parameters / 1e9, load_seconds, prompt->input_ids.size(),
               pre->pixel_values.size(), generation.tokens.size(), generate_seconds, load.device.str().c_str());
  auto answer = core::serve::answer_text(*m.tokenizer, generation);  // the reference's _decode_text
  if (!answer.ok()) return fail(answer.status());
  std::printf("%s\n", answer->c_str());
  return 0;
}

}  // namespace

void add_generate_command(CLI::App& app, int& exit_code) {
  static std::string model, image, text, device = "cpu", dtype;
  static int max_new_tokens = 512;
  static Decoding decoding;
  static AdapterChoice adapter;
  CLI::App* cmd = app.add_subcommand(
      "generate", "Answer for one image (greedy, sampled or beam search), printed as text");
  cmd->add_option("--model", model, "checkpoint directory")->required();
  cmd->add_option("--image", image, "image file")->required();
  cmd->add_option("--text", text, "question after the image (default: none, the image alone)");
  cmd->add_option("--max-new-tokens", max_new_tokens, "most tokens to generate (default 512)")
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--sample", decoding.sample,
                "sample instead of greedy decoding (chat()'s defaults: temperature 0.7, top-k 100, "
                "top-p 0.8, repetition penalty 1.05 over generated tokens)");
  cmd->add_option("--temperature", decoding.sampling.temperature, "with --sample")->check(CLI::PositiveNumber);
  cmd->add_option("--top-k", decoding.sampling.top_k, "with --sample; 0 disables")->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-p", decoding.sampling.top_p, "with --sample; 1 disables")->check(CLI::Range(0.0, 1.0));
  CLI::Option* penalty =
      cmd->add_option("--repetition-penalty", decoding.sampling.repetition_penalty,
                      "over generated tokens, with --sample (default 1.05) or --num-beams (default 1.2); "
                      "1 disables")
          ->check(CLI::PositiveNumber);
  cmd->add_option("--seed", decoding.seed, "with --sample: the draws' seed (default 0)");
  cmd->add_option("--num-beams", decoding.num_beams,
                  "beam search with N beams when N > 1, as chat(sampling=False) with 3 (default 1: "
                  "greedy or --sample)")
      ->check(CLI::PositiveNumber);
  CLI::Option* adapter_option =
      cmd->add_option("--adapter", adapter.dir, "PEFT LoRA adapter directory to answer with (unmerged)");
  cmd->add_flag("--merge", adapter.merge, "merge the adapter into the weights instead (to compare)")
      ->needs(adapter_option);
  cmd->add_option("--device", device, "cpu or cuda (default cpu)")->check(CLI::IsMember({"cpu", "cuda"}));
  cmd->add_option("--dtype", dtype, "f32 or bf16 (default: f32 on cpu, bf16 on cuda)")
      ->check(CLI::IsMember({"f32", "bf16"}));
  cmd->footer(
      "Example: cpm-tool generate --model ./MiniCPM-o-2_6 --image formula.png --text 'LaTeX?'\n"
      "chat(sampling=False): add --num-beams 3");
  cmd->callback([&exit_code, penalty] {
    if (decoding.sample && decoding.num_beams > 1) {
      fail("--sample with --num-beams > 1 (beam sampling) is not supported; choose one");
      exit_code = 2;
      return;
    }
    if (penalty->count() > 0) decoding.beam_repetition_penalty = decoding.sampling.repetition_penalty;
    exit_code = run(model, image, text, max_new_tokens, device, dtype, decoding, adapter);
  });
}

}  // namespace cpm::tool
