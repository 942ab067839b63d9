// SPDX-License-Identifier: Apache-2.0
#include "model/qwen2.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/abs.h>
#include <ATen/ops/allclose.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/randn.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "io/safetensors.h"
#include "model/weight_loader.h"
#include "core/model/golden_util.h"

namespace cpm::core::model {
namespace {

using ::testing::HasSubstr;

// A tiny Qwen2 from Hugging Face transformers (tests/core/model/make_qwen2_goldens.py): its weights
// under `llm.`, token ids, and the float32 logits and final hidden states transformers computed.
struct Golden {
  io::SafetensorsCheckpoint checkpoint;
  io::ModelConfig config;
};

Golden golden() {
  auto ckpt = io::SafetensorsCheckpoint::open(CPM_TEST_SOURCE_DIR "/tests/data/model/qwen2_tiny.safetensors");
  if (!ckpt.ok()) throw std::runtime_error(std::string(ckpt.status().message()));
  const io::ModelConfig c = testing::llm_config_from(testing::golden_meta(*ckpt, "golden.logits"));
  return {std::move(*ckpt), c};
}

std::vector<ParamSpec> llm_specs(const io::ModelConfig& c) { return qwen2_parameter_specs(c, "llm"); }

double max_rel_error(const at::Tensor& got, const at::Tensor& want) {
  return ((got - want).abs().max() / want.abs().max()).item<double>();
}

TEST(Qwen2, MatchesTransformersInFloat32) {
  const Golden g = golden();
  // The golden file also holds the inputs and outputs; load only the model's own keys.
  Parameters params;
  for (const ParamSpec& spec : llm_specs(g.config)) {
    auto t = g.checkpoint.tensor(spec.name);
    ASSERT_TRUE(t.ok()) << spec.name;
    ASSERT_EQ(t->sizes().vec(), spec.shape) << spec.name;
    params.set(spec.name, t->clone());
  }
  const Qwen2ForCausalLM llm(params, "llm", g.config);
  const at::Tensor ids = *g.checkpoint.tensor("golden.input_ids");
  const at::Tensor positions = *g.checkpoint.tensor("golden.position_ids");
  const at::Tensor hidden = llm.hidden_states(llm.embed(ids), positions);
  const at::Tensor logits = llm.logits(hidden);
  const double hidden_err = max_rel_error(hidden, *g.checkpoint.tensor("golden.hidden"));
  const double logits_err = max_rel_error(logits, *g.checkpoint.tensor("golden.logits"));
  std::cout << "[ qwen2   ] max relative error vs transformers: hidden " << hidden_err << ", logits "
            << logits_err << "\n";
  EXPECT_LT(hidden_err, 1e-4);
  EXPECT_LT(logits_err, 1e-4);
  EXPECT_TRUE(logits.argmax(-1).equal(g.checkpoint.tensor("golden.logits")->argmax(-1)));
}

TEST(Qwen2, SpecsMatchTheCheckpointTableForTheRealModel) {
  io::ModelConfig real;  // defaults are MiniCPM-o-2.6's Qwen2.5-7B numbers
  const std::vector<ParamSpec> specs = llm_specs(real);
  EXPECT_EQ(specs.size(), 1u + 28u * 12u + 2u);
  std::map<std::string, std::vector<int64_t>> by_name;
  int64_t params = 0;
  for (const auto& s : specs) {
    by_name[s.name] = s.shape;
    int64_t n = 1;
    for (int64_t d : s.shape) n *= d;
    params += n;
  }
  EXPECT_EQ(by_name["llm.model.embed_tokens.weight"], (std::vector<int64_t>{151700, 3584}));
  EXPECT_EQ(by_name["llm.model.layers.27.self_attn.k_proj.weight"], (std::vector<int64_t>{512, 3584}));
  EXPECT_EQ(by_name["llm.model.layers.0.self_attn.q_proj.bias"], (std::vector<int64_t>{3584}));
  EXPECT_EQ(by_name.count("llm.model.layers.0.self_attn.o_proj.bias"), 0u);
  EXPECT_EQ(by_name["llm.model.layers.5.mlp.down_proj.weight"], (std::vector<int64_t>{3584, 18944}));
  EXPECT_EQ(by_name["llm.lm_head.weight"], (std::vector<int64_t>{151700, 3584}));
  EXPECT_EQ(params, 7'613'007'360);  // the LLM count the reference benchmark reports (shared/bench)
}

TEST(Qwen2, RmsNormAndRopeFollowTheReferenceFormulas) {
  const at::Tensor x = at::randn({2, 3, 8});
  const at::Tensor w = at::randn({8});
  const at::Tensor want = w * x * (x.pow(2).mean(-1, true) + 1e-6).rsqrt();
  EXPECT_TRUE(at::allclose(rms_norm(x, w, 1e-6), want, 1e-5, 1e-6));
  const auto [cos, sin] = rope_tables(at::arange(5, at::kLong).unsqueeze(0), 8, 10000.0);
  ASSERT_EQ(cos.sizes(), (at::IntArrayRef{1, 5, 8}));
  // Position 3, frequency index 1: angle 3 * 10000^(-2/8), repeated in both halves.
  const double angle = 3 * std::pow(10000.0, -2.0 / 8);
  EXPECT_NEAR(cos[0][3][1].item<double>(), std::cos(angle), 1e-6);
  EXPECT_NEAR(sin[0][3][5].item<double>(), std::sin(angle), 1e-6);
}

TEST(WeightLoader, StrictJoinReportsEveryMismatch) {
  const Golden g = golden();
  Parameters params;
  // The golden file has extra "golden.*" tensors: unexpected.
  auto report = load_parameters(g.checkpoint, llm_specs(g.config), {}, params);
  ASSERT_FALSE(report.ok());
  EXPECT_THAT(report.status().message(), HasSubstr("4 unexpected: golden.hidden"));
  // Specs the file lacks, and a wrong shape.
  std::vector<ParamSpec> specs = llm_specs(g.config);
  specs.push_back({"llm.model.layers.9.mlp.up_proj.weight", {128, 64}, Init::kNormal});
  specs[1].shape = {1, 2};
  for (const char* extra : {"golden.hidden", "golden.logits", "golden.input_ids", "golden.position_ids"}) {
    specs.push_back({extra, g.checkpoint.find(extra)->shape, Init::kNormal});
  }
  report = load_parameters(g.checkpoint, specs, {}, params);
  ASSERT_FALSE(report.ok());
  EXPECT_THAT(report.status().message(), HasSubstr("1 missing: llm.model.layers.9.mlp.up_proj.weight"));
  EXPECT_THAT(report.status().message(), HasSubstr("checkpoint [64, 64] vs expected [1, 2]"));
  EXPECT_TRUE(params.all().empty());  // nothing half-loaded
}

TEST(WeightLoader, LoadsIntoTheTargetDtypeAndSkipsAudio) {
  const Golden g = golden();
  const std::vector<ParamSpec> specs = testing::with_goldens(llm_specs(g.config), g.checkpoint);
  Parameters params;
  LoadOptions options;
  options.dtype = at::kBFloat16;
  size_t calls = 0;
  options.progress = [&](size_t done, size_t total, const std::string&) {
    ++calls;
    EXPECT_LE(done, total);
  };
  auto report = load_parameters(g.checkpoint, specs, options, params);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(calls, specs.size());
  EXPECT_EQ(params.get("llm.lm_head.weight").scalar_type(), at::kBFloat16);
  EXPECT_EQ(report->bytes, report->num_parameters * 2);
  EXPECT_TRUE(is_skipped_key("apm.layers.0.fc1.weight"));
  EXPECT_TRUE(is_skipped_key("tts.dvae.weight"));
  EXPECT_FALSE(is_skipped_key("vpm.post_layernorm.weight"));
}

}  // namespace
}  // namespace cpm::core::model
