// SPDX-License-Identifier: Apache-2.0
//
// PEFT interoperability against the reference stack (transformers + peft), both ways, on a tiny
// checkpoint and one formula image (tests/core/train/make_peft_goldens.py wrote the goldens):
//   tests/data/adapters/peft_python   written by PEFT's save_pretrained; here it must give PEFT's
//                                     outputs, unmerged and merged.
//   tests/data/adapters/cpmd_written  written by io::write_peft_adapter (WriteCpmdAdapterFixture);
//                                     PEFT's from_pretrained loaded every key of it, and its outputs
//                                     there must be ours.
#include <ATen/TensorOperators.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/index_select.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/tensor.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>

#include "absl/strings/match.h"
#include "io/image_decode.h"
#include "io/image_slicing.h"
#include "io/model_config.h"
#include "io/peft_adapter.h"
#include "io/prompt.h"
#include "io/safetensors.h"
#include "model/adapter.h"
#include "model/load.h"
#include "model/random_checkpoint.h"
#include "nlohmann/json.hpp"
#include "test_util.h"

namespace cpm::core::model {
namespace {

namespace fs = std::filesystem;

const std::string kAdapters = CPM_TEST_SOURCE_DIR "/tests/data/adapters";
constexpr int64_t kVisionStride = 16;  // the goldens keep every 16th vision row

// What the goldens keep of one forward pass (make_peft_goldens.py's `run`).
struct Outputs {
  at::Tensor vision;     // [N, Lmax, vision hidden]
  at::Tensor resampler;  // [N, query_num, hidden]
  at::Tensor hidden;     // [T, hidden], after the final norm
  at::Tensor logits;     // [T, V]
};

// max |got - want| / max |want|
double rel(const at::Tensor& got, const at::Tensor& want) {
  return ((got - want).abs().max() / want.abs().max()).item<double>();
}

// The adapter of tests/data/adapters/cpmd_written: PEFT's list form of target_modules (attention
// and MLP projections, some named in full), rank 4 with scaling 3, random B, and the resampler and
// vision tower copies perturbed and stored as bfloat16, as a bf16 training run would save them.
absl::StatusOr<io::PeftAdapter> cpmd_adapter(const Parameters& base, const io::ModelConfig& model) {
  io::PeftLoraConfig config;
  config.r = 4;
  config.lora_alpha = 12;
  config.lora_dropout = 0.0;
  config.target_modules = {"o_proj", "down_proj", "llm.model.layers.0.self_attn.q_proj",
                           "llm.model.layers.1.self_attn.v_proj"};
  config.modules_to_save = {"resampler", "vpm"};
  auto adapter = init_adapter(base, model, config, /*seed=*/3);
  if (!adapter.ok()) return adapter.status();
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(4);
  for (auto& [name, t] : adapter->tensors) {
    if (absl::EndsWith(name, ".lora_B.weight")) {
      t = at::randn(t.sizes(), gen) * 0.1;
    } else if (!absl::EndsWith(name, ".lora_A.weight")) {
      t = (t + at::randn(t.sizes(), gen) * 0.02).to(at::kBFloat16);
    }
  }
  return adapter;
}

class PeftInterop : public ::testing::Test {
 protected:
  // The checkpoint the goldens were made on (`cpm-tool mkmodel --preset tiny --dtype bf16 --seed
  // 11`), loaded in float32, and the prompt the script was given.
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    RandomCheckpointOptions options;
    options.dtype = c10::ScalarType::BFloat16;
    options.seed = 11;
    options.max_shard_bytes = int64_t{32} << 20;
    options.base_tokenizer_json = CPM_QWEN_TOKENIZER_DIR "/tokenizer.json";
    const std::string path = dir_->file("tiny");
    if (const absl::Status s = write_random_checkpoint(path, tiny_config(), options); !s.ok()) {
      throw std::runtime_error(std::string(s.message()));
    }
    auto loaded = load_model(path, {});
    if (!loaded.ok()) throw std::runtime_error(std::string(loaded.status().message()));
    model_ = loaded->release();

    std::ifstream in(CPM_TEST_SOURCE_DIR "/tests/data/images/formulas/0.png", std::ios::binary);
    const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), {});
    auto image = io::decode_image(bytes);
    auto pre = io::preprocess_image(*image, model_->configs.preprocessor);
    if (!pre.ok()) throw std::runtime_error(std::string(pre.status().message()));
    io::PromptImage prompt_image;
    if (pre->grid) prompt_image.grid = std::make_pair(pre->grid->cols, pre->grid->rows);
    auto prompt = io::build_prompt(*model_->tokenizer, model_->chat_template, model_->configs.preprocessor,
                                   {{"user", {io::ImageRef{0}, std::string("Convert the formula to LaTeX.")}}},
                                   {prompt_image});
    if (!prompt.ok()) throw std::runtime_error(std::string(prompt.status().message()));
    image_ = new io::PreprocessedImage(*std::move(pre));
    prompt_ = new io::Prompt(*std::move(prompt));

    // Absent only while the fixtures are being remade (WriteCpmdAdapterFixture runs first).
    auto goldens = io::SafetensorsFile::open(kAdapters + "/peft_goldens.safetensors");
    if (goldens.ok()) goldens_ = new std::shared_ptr<io::SafetensorsFile>(*goldens);
  }
  static void TearDownTestSuite() {
    delete goldens_;
    delete prompt_;
    delete image_;
    delete model_;
    delete dir_;
  }

  static at::Tensor golden(const std::string& name) {
    if (goldens_ == nullptr) throw std::runtime_error("no " + kAdapters + "/peft_goldens.safetensors");
    auto t = (*goldens_)->tensor(name);
    if (!t.ok()) throw std::runtime_error(std::string(t.status().message()));
    return t->clone();
  }

  static Outputs run(const MiniCPMO& m) {
    Outputs o;
    o.vision = m.vision(image_->pixel_values, image_->tgt_sizes);
    o.resampler = m.resample(o.vision, image_->tgt_sizes);
    const at::Tensor ids = at::tensor(std::vector<int64_t>(prompt_->input_ids.begin(), prompt_->input_ids.end()));
    const at::Tensor embeds = m.prompt_embeddings(ids, prompt_->image_bound, o.resampler);
    o.hidden = m.llm().hidden_states(embeds, at::arange(ids.size(0), at::kLong).unsqueeze(0))[0];
    o.logits = m.llm().logits(o.hidden);
    return o;
  }

  // Every golden of `set` ("base", "python", "cpmd") against `got`; returns the logits' error.
  static double expect_matches(const Outputs& got, const std::string& set) {
    const at::Tensor vision = got.vision.slice(1, 0, got.vision.size(1), kVisionStride);
    const double errors[] = {rel(vision, golden(set + ".vision")), rel(got.resampler, golden(set + ".resampler")),
                             rel(got.hidden, golden(set + ".hidden")),
                             rel(at::index_select(got.logits, 1, golden("vocab_index")), golden(set + ".logits"))};
    const char* names[] = {"vision", "resampler", "hidden", "logits"};
    for (int i = 0; i < 4; ++i) EXPECT_LT(errors[i], 1e-4) << set << " " << names[i];
    // The reference's argmax over the whole vocabulary is ours too, up to a near tie.
    const at::Tensor argmax = golden(set + ".argmax");
    const at::Tensor at_theirs = got.logits.gather(1, argmax.unsqueeze(1)).squeeze(1);
    const double gap = ((std::get<0>(got.logits.max(1)) - at_theirs).max() / got.logits.abs().max()).item<double>();
    EXPECT_LT(gap, 1e-4) << set << ": the reference's argmax is not (nearly) ours";
    std::cout << "[ peft    ] " << set << ": max relative error vision " << errors[0] << ", resampler " << errors[1]
              << ", hidden " << errors[2] << ", logits " << errors[3] << "\n";
    return errors[3];
  }

  static Outputs run_adapter(const std::string& dir, bool merge) {
    auto adapter = io::read_peft_adapter(dir);
    EXPECT_TRUE(adapter.ok()) << adapter.status();
    const io::ModelConfig& c = model_->configs.model;
    auto params = merge ? merge_adapter(model_->params, c, *adapter) : apply_adapter(model_->params, c, *adapter);
    EXPECT_TRUE(params.ok()) << params.status();
    return run(MiniCPMO(*params, c, merge ? RunOptions{} : run_options(adapter->config, /*training=*/false)));
  }

  static testing::TempDir* dir_;
  static LoadedModel* model_;
  static io::PreprocessedImage* image_;
  static io::Prompt* prompt_;
  static std::shared_ptr<io::SafetensorsFile>* goldens_;
};
testing::TempDir* PeftInterop::dir_ = nullptr;
LoadedModel* PeftInterop::model_ = nullptr;
io::PreprocessedImage* PeftInterop::image_ = nullptr;
io::Prompt* PeftInterop::prompt_ = nullptr;
std::shared_ptr<io::SafetensorsFile>* PeftInterop::goldens_ = nullptr;

TEST_F(PeftInterop, SamePromptAndBaseOutputsAsTheReference) {
  const at::Tensor ids = golden("input_ids");
  ASSERT_EQ(ids.size(0), static_cast<int64_t>(prompt_->input_ids.size()));
  EXPECT_TRUE(ids.equal(at::tensor(std::vector<int64_t>(prompt_->input_ids.begin(), prompt_->input_ids.end()))));
  expect_matches(run(*model_->model), "base");
}

TEST_F(PeftInterop, PeftWrittenAdapterGivesPeftOutputsUnmergedAndMerged) {
  auto adapter = io::read_peft_adapter(kAdapters + "/peft_python");
  ASSERT_TRUE(adapter.ok()) << adapter.status();
  EXPECT_EQ(adapter->config.r, 8);
  EXPECT_DOUBLE_EQ(adapter->config.scaling(), 2.0);
  EXPECT_EQ(adapter->config.modules_to_save, (std::vector<std::string>{"resampler", "vpm"}));
  const Outputs unmerged = run_adapter(kAdapters + "/peft_python", /*merge=*/false);
  const Outputs merged = run_adapter(kAdapters + "/peft_python", /*merge=*/true);
  const double u = expect_matches(unmerged, "python");
  const double m = expect_matches(merged, "python");
  std::cout << "[ peft    ] PEFT-written adapter: logits error unmerged " << u << ", merged " << m << "\n";
  // The adapter matters: the goldens are not the base model's.
  EXPECT_GT(rel(golden("python.logits"), golden("base.logits")), 0.05);
}

TEST_F(PeftInterop, CpmdWrittenAdapterGivesInPeftWhatItGivesHere) {
  const double u = expect_matches(run_adapter(kAdapters + "/cpmd_written", /*merge=*/false), "cpmd");
  const double m = expect_matches(run_adapter(kAdapters + "/cpmd_written", /*merge=*/true), "cpmd");
  std::cout << "[ peft    ] cpmd-written adapter: logits error unmerged " << u << ", merged " << m << "\n";
  EXPECT_GT(rel(golden("cpmd.logits"), golden("base.logits")), 0.05);
}

std::string file_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

// The committed fixture is what the writer writes today, so PEFT's verdict on it holds for the writer.
TEST_F(PeftInterop, CommittedCpmdAdapterIsWhatTheWriterWrites) {
  auto adapter = cpmd_adapter(model_->params, model_->configs.model);
  ASSERT_TRUE(adapter.ok()) << adapter.status();
  testing::TempDir tmp;
  ASSERT_TRUE(io::write_peft_adapter(tmp.file("a"), *adapter).ok());
  for (const char* name : {"adapter_config.json", "adapter_model.safetensors"}) {
    EXPECT_EQ(file_bytes(tmp.path() / "a" / name), file_bytes(fs::path(kAdapters) / "cpmd_written" / name)) << name;
  }
}

// Writes tests/data/adapters/cpmd_written (remove it first) when CPM_WRITE_FIXTURES=1; then rerun
// make_peft_goldens.py for its `cpmd.*` goldens.
TEST_F(PeftInterop, WriteCpmdAdapterFixture) {
  const char* write = std::getenv("CPM_WRITE_FIXTURES");
  if (write == nullptr || std::string(write) != "1") GTEST_SKIP() << "set CPM_WRITE_FIXTURES=1 to write the fixture";
  auto adapter = cpmd_adapter(model_->params, model_->configs.model);
  ASSERT_TRUE(adapter.ok()) << adapter.status();
  const absl::Status s = io::write_peft_adapter(kAdapters + "/cpmd_written", *adapter);
  ASSERT_TRUE(s.ok()) << s;
}

// PEFT 0.21 writes fields for LoRA variants whose tensors can look like plain LoRA; the config it
// wrote parses, and each variant, once set, is refused by name.
TEST(PeftConfigInterop, LaterPeftVariantsAreRefusedByName) {
  auto text = io::read_file(kAdapters + "/peft_python/adapter_config.json");
  ASSERT_TRUE(text.ok()) << text.status();
  ASSERT_TRUE(io::parse_peft_config(*text, "peft_python").ok());
  const std::pair<std::string, std::string> variants[] = {
      {"lora_bias", "true"},          {"alora_invocation_tokens", "[151644]"},
      {"use_qalora", "true"},         {"use_bdlora", "{}"},
      {"arrow_config", "{}"},         {"layer_replication", "[[0, 2]]"},
      {"target_parameters", "[\"mlp.experts.gate_up_proj\"]"}, {"trainable_token_indices", "[151644]"}};
  for (const auto& [key, value] : variants) {
    nlohmann::json doc = nlohmann::json::parse(*text);
    doc[key] = nlohmann::json::parse(value);
    const absl::Status s = io::parse_peft_config(doc.dump(), "cfg").status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << key;
    EXPECT_NE(std::string(s.message()).find(key + " is set"), std::string::npos) << s;
  }
}

}  // namespace
}  // namespace cpm::core::model
