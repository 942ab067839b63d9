// SPDX-License-Identifier: Apache-2.0
//
// cpm-tool prompt: the token ids and image bounds that the model receives for one image and a
// question, built exactly as the reference chat() + processor build them.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>

#include "commands.h"
#include "io/chat_template.h"
#include "io/image_decode.h"
#include "io/image_slicing.h"
#include "io/model_config.h"
#include "io/prompt.h"
#include "io/tokenizer.h"
#include "nlohmann/json.hpp"

namespace cpm::tool {
namespace {

int run(const std::string& model, const std::string& image_path, const std::string& text,
        std::optional<int> max_slice_nums) {
  auto configs = core::io::load_checkpoint_configs(model);
  if (!configs.ok()) return fail(std::string(configs.status().message()));
  auto tokenizer = core::io::load_tokenizer(model);
  if (!tokenizer.ok()) return fail(std::string(tokenizer.status().message()));
  auto chat_template = core::io::ChatTemplate::from_jinja(configs->tokenizer.chat_template);
  if (!chat_template.ok()) return fail(std::string(chat_template.status().message()));

  std::ifstream in(image_path, std::ios::binary);
  if (!in) return fail(image_path + ": cannot be read");
  const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), {});
  auto image = core::io::decode_image(bytes);
  if (!image.ok()) return fail(image_path + ": " + std::string(image.status().message()));
  core::io::PreprocessorConfig config = configs->preprocessor;
  if (max_slice_nums) config.max_slice_nums = *max_slice_nums;
  auto plan = core::io::plan_slices(image->width, image->height, config);
  if (!plan.ok()) return fail(std::string(plan.status().message()));

  core::io::PromptImage prompt_image;
  if (plan->grid) prompt_image.grid = std::make_pair(plan->grid->cols, plan->grid->rows);
  auto prompt = core::io::build_prompt(**tokenizer, *chat_template, config,
                                       {{"user", {core::io::ImageRef{0}, text}}}, {prompt_image});
  if (!prompt.ok()) return fail(std::string(prompt.status().message()));
  nlohmann::json out;
  out["input_ids"] = prompt->input_ids;
  out["image_bound"] = nlohmann::json::array();
  for (const auto& [start, end] : prompt->image_bound) out["image_bound"].push_back({start, end});
  out["grid"] = plan->grid ? nlohmann::json{plan->grid->cols, plan->grid->rows} : nlohmann::json(nullptr);
  std::cout << out.dump() << '\n';
  return 0;
}

}  // namespace

void add_prompt_command(CLI::App& app, int& exit_code) {
  static std::string model, image, text;
  static std::optional<int> max_slice_nums;
  CLI::App* cmd = app.add_subcommand(
      "prompt", "The chat-formatted prompt for one image and a question: JSON with input_ids and image_bound");
  cmd->add_option("--model", model, "checkpoint directory")->required();
  cmd->add_option("--image", image, "image file (PNG, JPEG, ...)")->required();
  cmd->add_option("--text", text, "the question that follows the image")->required();
  cmd->add_option_function<int>("--max-slice-nums", [](const int& n) { max_slice_nums = n; },
                                "most slices (default: preprocessor_config.json's)")
      ->check(CLI::PositiveNumber);
  cmd->footer("Example: cpm-tool prompt --model ./MiniCPM-o-2_6 --image formula.png --text 'OCR this.'");
  cmd->callback([&exit_code] { exit_code = run(model, image, text, max_slice_nums); });
}

}  // namespace cpm::tool
