// SPDX-License-Identifier: Apache-2.0
//
// cpm-tool forward: one image and a question through the whole model (with a PEFT adapter if one is
// given), writing the intermediate tensors, so they can be compared with the reference implementation.
#include <chrono>
#include <cstdio>

#include <ATen/ops/arange.h>
#include <ATen/ops/tensor.h>

#include "commands.h"
#include "image_prompt.h"
#include "common/guard.h"
#include "io/safetensors.h"
#include "model/load.h"

namespace cpm::tool {
namespace {

int run(const std::string& model_dir, const std::string& image_path, const std::string& text,
        const std::string& out, const std::string& adapter, bool merge) {
  auto loaded = core::model::load_model(model_dir, {});
  if (!loaded.ok()) return fail(std::string(loaded.status().message()));
  const core::model::LoadedModel& m = **loaded;
  auto adapted = adapted_model(m, adapter, merge);
  if (!adapted.ok()) return fail(adapted.status());
  const core::model::MiniCPMO& model = *adapted ? **adapted : *m.model;
  auto prepared = prepare_image_prompt(m, image_path, text);
  if (!prepared.ok()) return fail(std::string(prepared.status().message()));
  const core::io::PreprocessedImage* pre = &prepared->image;
  const core::io::Prompt* prompt = &prepared->prompt;

  std::vector<std::pair<std::string, at::Tensor>> tensors;
  double seconds[4] = {};  // vision, resampler, LLM, logits over every position
  const absl::Status ran = core::guarded("forward", [&] {
    auto t = std::chrono::steady_clock::now();
    auto lap = [&t](double& into) {
      const auto now = std::chrono::steady_clock::now();
      into = std::chrono::duration<double>(now - t).count();
      t = now;
    };
    const at::Tensor vision = model.vision(pre->pixel_values, pre->tgt_sizes);   // [N, Lmax, Dv]
    lap(seconds[0]);
    const at::Tensor resampled = model.resample(vision, pre->tgt_sizes);          // [N, Q, D]
    lap(seconds[1]);
    const at::Tensor ids = at::tensor(std::vector<int64_t>(prompt->input_ids.begin(), prompt->input_ids.end()));
    const at::Tensor embeds = model.prompt_embeddings(ids, prompt->image_bound, resampled);
    const at::Tensor positions = at::arange(ids.size(0), at::kLong).unsqueeze(0);
    const at::Tensor hidden = model.llm().hidden_states(embeds, positions);
    lap(seconds[2]);
    const at::Tensor logits = model.llm().logits(hidden)[0];                      // [T, V]
    lap(seconds[3]);
    tensors = {{"vision", vision.to(at::kFloat).contiguous()},
               {"resampler", resampled.to(at::kFloat).contiguous()},
               {"logits", logits.to(at::kFloat).contiguous()},
               {"input_ids", ids}};
    return absl::OkStatus();
  });
  if (!ran.ok()) return fail(std::string(ran.message()));
  if (auto s = core::io::write_safetensors(out, tensors); !s.ok()) return fail(std::string(s.message()));
  std::printf("wrote %s: %zu image(s), %zu tokens; vision %.3f s, resampler %.3f s, LLM %.3f s, "
              "logits at every position %.3f s\n",
              out.c_str(), pre->pixel_values.size(), prompt->input_ids.size(), seconds[0], seconds[1],
              seconds[2], seconds[3]);
  return 0;
}

}  // namespace

void add_forward_command(CLI::App& app, int& exit_code) {
  static std::string model, image, text, out, adapter;
  static bool merge = false;
  CLI::App* cmd = app.add_subcommand(
      "forward", "Run one image + question through the model; write vision, resampler and logits");
  cmd->add_option("--model", model, "checkpoint directory")->required();
  cmd->add_option("--image", image, "image file")->required();
  cmd->add_option("--text", text, "the question that follows the image")->required();
  cmd->add_option("--out", out, "safetensors file to write (float32: vision, resampler, logits)")->required();
  CLI::Option* adapter_option =
      cmd->add_option("--adapter", adapter, "PEFT LoRA adapter directory to run with (unmerged)");
  cmd->add_flag("--merge", merge, "merge the adapter into the weights instead (to compare)")->needs(adapter_option);
  cmd->footer("Example: cpm-tool forward --model var/models/tiny --image f.png --text 'OCR' --out f.safetensors");
  cmd->callback([&exit_code] { exit_code = run(model, image, text, out, adapter, merge); });
}

}  // namespace cpm::tool
