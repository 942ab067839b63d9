// SPDX-License-Identifier: Apache-2.0
#include "model/minicpmo.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/isfinite.h>
#include <ATen/ops/tensor.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "io/image_decode.h"
#include "io/image_slicing.h"
#include "io/prompt.h"
#include "model/load.h"
#include "model/random_checkpoint.h"
#include "core/model/golden_util.h"
#include "test_util.h"

namespace cpm::core::model {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

int64_t count(const std::vector<ParamSpec>& specs, const std::string& prefix) {
  int64_t n = 0;
  for (const ParamSpec& s : specs) {
    if (s.name.rfind(prefix, 0) != 0) continue;
    int64_t k = 1;
    for (int64_t d : s.shape) k *= d;
    n += k;
  }
  return n;
}

TEST(MiniCPMO, SpecsOfTheRealModelHaveTheReferenceParameterCounts) {
  const std::vector<ParamSpec> specs = minicpmo_parameter_specs(full_config());
  // The counts the reference benchmark reports for the same shapes (shared/bench/README.md).
  EXPECT_EQ(count(specs, "vpm."), 417'792'240);
  EXPECT_EQ(count(specs, "resampler."), 68'619'264);
  EXPECT_EQ(count(specs, "llm."), 7'613'007'360);
}

class TinyModel : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    RandomCheckpointOptions options;
    options.seed = 7;
    options.max_shard_bytes = int64_t{32} << 20;
    options.base_tokenizer_json = CPM_QWEN_TOKENIZER_DIR "/tokenizer.json";
    const absl::Status s = write_random_checkpoint(path(), tiny_config(), options);
    if (!s.ok()) throw std::runtime_error(std::string(s.message()));
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::string path() { return dir_->file("tiny"); }
  static testing::TempDir* dir_;
};
testing::TempDir* TinyModel::dir_ = nullptr;

TEST_F(TinyModel, LoadsStrictlyAndRunsAFormulaImageEndToEnd) {
  const auto start = std::chrono::steady_clock::now();
  auto loaded = load_model(path(), {});
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const LoadedModel& m = **loaded;
  EXPECT_EQ(m.report.num_parameters, count(minicpmo_parameter_specs(m.configs.model), ""));
  EXPECT_EQ(m.report.skipped, 0u);

  std::ifstream in(CPM_TEST_SOURCE_DIR "/tests/data/images/formulas/0.png", std::ios::binary);
  const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), {});
  auto image = io::decode_image(bytes);
  ASSERT_TRUE(image.ok()) << image.status();
  auto pre = io::preprocess_image(*image, m.configs.preprocessor);
  ASSERT_TRUE(pre.ok()) << pre.status();
  io::PromptImage prompt_image;
  if (pre->grid) prompt_image.grid = std::make_pair(pre->grid->cols, pre->grid->rows);
  auto prompt = io::build_prompt(*m.tokenizer, m.chat_template, m.configs.preprocessor,
                                 {{"user", {io::ImageRef{0}, std::string("OCR this formula.")}}},
                                 {prompt_image});
  ASSERT_TRUE(prompt.ok()) << prompt.status();

  const at::Tensor features = m.model->encode_images(pre->pixel_values, pre->tgt_sizes);
  ASSERT_EQ(features.sizes(), (at::IntArrayRef{static_cast<int64_t>(pre->pixel_values.size()), 64, 128}));
  const at::Tensor ids = at::tensor(std::vector<int64_t>(prompt->input_ids.begin(), prompt->input_ids.end()));
  const at::Tensor embeds = m.model->prompt_embeddings(ids, prompt->image_bound, features);
  // The image spans now hold the resampler's rows, not the <unk> embedding.
  const auto [s0, e0] = prompt->image_bound[0];
  EXPECT_TRUE(embeds[0][s0].equal(features[0][0]));
  EXPECT_TRUE(embeds[0][e0 - 1].equal(features[0][63]));
  const at::Tensor positions = at::arange(ids.size(0), at::kLong).unsqueeze(0);
  const at::Tensor logits = m.model->llm().logits(m.model->llm().hidden_states(embeds, positions));
  EXPECT_EQ(logits.sizes(), (at::IntArrayRef{1, ids.size(0), 151700}));
  EXPECT_TRUE(at::isfinite(logits).all().item<bool>());
  std::cout << "[ tiny    ] load + preprocess + forward of " << ids.size(0) << " tokens, "
            << pre->pixel_values.size() << " image(s): "
            << std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() << " s\n";
}

TEST_F(TinyModel, CorruptCheckpointsAreRefusedWithTheReason) {
  testing::TempDir broken;
  const fs::path copy = broken.path() / "copy";
  fs::copy(path(), copy);
  fs::remove(copy / "model-00002-of-00003.safetensors");
  auto missing = load_model(copy.string(), {});
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("model-00002-of-00003.safetensors"));

  fs::remove_all(copy);
  fs::copy(path(), copy);
  std::ofstream(copy / "config.json") << model_config_json([] {
    io::ModelConfig c = tiny_config();
    c.intermediate_size = 384;  // the weights were made for 256
    return c;
  }());
  auto mismatched = load_model(copy.string(), {});
  EXPECT_EQ(mismatched.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(mismatched.status().message(), HasSubstr("mis-shaped"));
  EXPECT_THAT(mismatched.status().message(), HasSubstr("vs expected [384, 128]"));
}

TEST_F(TinyModel, WriterRefusesAnExistingDirectoryAndIsReproducible) {
  RandomCheckpointOptions options;
  options.seed = 7;
  options.max_shard_bytes = int64_t{32} << 20;
  options.base_tokenizer_json = CPM_QWEN_TOKENIZER_DIR "/tokenizer.json";
  EXPECT_EQ(write_random_checkpoint(path(), tiny_config(), options).code(), absl::StatusCode::kAlreadyExists);
  testing::TempDir other;
  ASSERT_TRUE(write_random_checkpoint(other.file("again"), tiny_config(), options).ok());
  auto a = io::SafetensorsCheckpoint::open(path());
  auto b = io::SafetensorsCheckpoint::open(other.file("again"));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(a->tensor("vpm.encoder.layers.1.mlp.fc2.weight")->equal(*b->tensor("vpm.encoder.layers.1.mlp.fc2.weight")));
  EXPECT_FALSE(fs::exists(other.path() / ".again.partial"));
}

}  // namespace
}  // namespace cpm::core::model

namespace cpm::core::model {
namespace {

// The whole path against a composition of independent parts (transformers' Idefics2 vision tower
// and Qwen2, the resampler on nn.MultiheadAttention, the reference's scatter):
// tests/core/model/make_minicpmo_goldens.py.
TEST(MiniCPMOVsReference, VisionResamplerAndFullPromptLogitsMatch) {
  auto ckpt = io::SafetensorsCheckpoint::open(CPM_TEST_SOURCE_DIR "/tests/data/model/minicpmo_tiny.safetensors");
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  const auto meta = testing::golden_meta(*ckpt, "golden.logits");
  io::ModelConfig c = testing::llm_config_from(meta["llm"]);
  c.vision = testing::vision_config_from(meta["vision"]);
  Parameters params;
  auto report = load_parameters(*ckpt, testing::with_goldens(minicpmo_parameter_specs(c), *ckpt), {}, params);
  ASSERT_TRUE(report.ok()) << report.status();
  const MiniCPMO model(params, c);

  std::vector<at::Tensor> strips;
  std::vector<std::array<int64_t, 2>> sizes;
  for (size_t i = 0; i < meta["sizes"].size(); ++i) {
    const int64_t h = meta["sizes"][i][0], w = meta["sizes"][i][1];
    const at::Tensor image = params.get("golden.image." + std::to_string(i));
    strips.push_back(image.view({3, h, 14, w, 14}).permute({0, 2, 1, 3, 4}).reshape({3, 14, h * w * 14}));
    sizes.push_back({h, w});
  }
  auto rel = [](const at::Tensor& got, const at::Tensor& want) {
    return ((got - want).abs().max() / want.abs().max()).item<double>();
  };
  const at::Tensor vision = model.vision(strips, sizes);
  for (size_t i = 0; i < sizes.size(); ++i) {
    const at::Tensor want = params.get("golden.vision." + std::to_string(i));
    EXPECT_LT(rel(vision[static_cast<int64_t>(i)].narrow(0, 0, want.size(0)), want), 1e-4) << i;
  }
  const at::Tensor features = model.encode_images(strips, sizes);
  const double resampler_err = rel(features, params.get("golden.resampler"));
  std::vector<std::pair<int64_t, int64_t>> bound;
  for (const auto& b : meta["image_bound"]) bound.emplace_back(b[0].get<int64_t>(), b[1].get<int64_t>());
  const at::Tensor ids = *ckpt->tensor("golden.input_ids");  // int64, not converted by the loader
  const at::Tensor embeds = model.prompt_embeddings(ids, bound, features);
  const at::Tensor logits = model.llm().logits(
      model.llm().hidden_states(embeds, at::arange(ids.size(0), at::kLong).unsqueeze(0)))[0];
  const double logits_err = rel(logits, params.get("golden.logits"));
  std::cout << "[ minicpmo] max relative error vs the reference composition: resampler " << resampler_err
            << ", logits " << logits_err << "\n";
  EXPECT_LT(resampler_err, 1e-4);
  EXPECT_LT(logits_err, 1e-4);
  EXPECT_TRUE(logits.argmax(-1).equal(params.get("golden.logits").argmax(-1)));
}

}  // namespace
}  // namespace cpm::core::model
