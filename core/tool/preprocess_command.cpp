// SPDX-License-Identifier: Apache-2.0
//
// cpm-tool preprocess: one image through the model's image path (decode, slice, normalise) with the
// checkpoint's preprocessor_config.json; prints the slicing as JSON and can dump the pixel tensors.
#include <cstdio>
#include <iostream>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "commands.h"
#include "io/image_decode.h"
#include "io/image_slicing.h"
#include "io/model_config.h"
#include "io/safetensors.h"
#include "nlohmann/json.hpp"

namespace cpm::tool {
namespace {

using json = nlohmann::ordered_json;  // keys in the documented order

struct PreprocessOptions {
  std::string model;
  std::string image;
  int max_slice_nums = 0;  // 0: the checkpoint's
  std::string dump;        // empty: no dump
};

int run(const PreprocessOptions& options) {
  absl::StatusOr<core::io::CheckpointConfigs> configs =
      core::io::load_checkpoint_configs(options.model);
  if (!configs.ok()) return fail(configs.status());
  core::io::PreprocessorConfig config = configs->preprocessor;
  if (options.max_slice_nums > 0) config.max_slice_nums = options.max_slice_nums;

  absl::StatusOr<std::string> bytes = core::io::read_file(options.image);
  if (!bytes.ok()) return fail(bytes.status());
  absl::StatusOr<core::io::RgbImage> image = core::io::decode_image(
      std::span(reinterpret_cast<const uint8_t*>(bytes->data()), bytes->size()));
  if (!image.ok()) {
    return fail(options.image + ": " + std::string(image.status().message()));
  }
  absl::StatusOr<core::io::PreprocessedImage> pre = core::io::preprocess_image(*image, config);
  if (!pre.ok()) return fail(pre.status());

  json out;
  out["grid"] = pre->grid ? json::array({pre->grid->cols, pre->grid->rows}) : json(nullptr);
  out["images"] = json::array();
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (size_t i = 0; i < pre->sizes.size(); ++i) {
    out["images"].push_back({{"width", pre->sizes[i].width},
                             {"height", pre->sizes[i].height},
                             {"tgt_size", pre->tgt_sizes[i]}});
    tensors.emplace_back("image_" + std::to_string(i), pre->pixel_values[i]);
  }
  if (!options.dump.empty()) {
    const absl::Status written = core::io::write_safetensors(options.dump, tensors);
    if (!written.ok()) return fail(written);
  }
  std::cout << out.dump() << std::endl;
  return 0;
}

}  // namespace

void add_preprocess_command(CLI::App& app, int& exit_code) {
  auto options = std::make_shared<PreprocessOptions>();
  CLI::App* cmd = app.add_subcommand(
      "preprocess", "decode and slice one image as the model does; print the slices as JSON");
  cmd->add_option("--model", options->model, "checkpoint directory (preprocessor_config.json)")
      ->required();
  cmd->add_option("--image", options->image, "PNG, JPEG, WebP, BMP or TIFF file")->required();
  cmd->add_option("--max-slice-nums", options->max_slice_nums,
                  "most slices per image (default: the checkpoint's max_slice_nums)")
      ->check(CLI::Range(1, 1024));
  cmd->add_option("--dump", options->dump,
                  "also write the pixel tensors to this .safetensors file: image_0, image_1, ... "
                  "(source first), each float32 [3, patch, h*w*patch]");
  cmd->footer(
      "Prints {\"grid\": [cols, rows] | null, \"images\": [{\"width\", \"height\", \"tgt_size\": "
      "[h, w]}, ...]}.\nExample: cpm-tool preprocess --model ./MiniCPM-o-2_6 --image formula.png");
  cmd->callback([options, &exit_code] { exit_code = run(*options); });
}

}  // namespace cpm::tool
