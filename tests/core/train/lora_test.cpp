// SPDX-License-Identifier: Apache-2.0
#include <ATen/TensorOperators.h>
#include <ATen/ops/allclose.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cross_entropy_loss.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/randn_like.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "core/train/small_model.h"
#include "io/peft_adapter.h"
#include "io/safetensors.h"
#include "model/adapter.h"
#include "test_util.h"

namespace cpm::core::model {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

const char* kRecipeRegex = R"(llm\..*layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|o_proj))";

io::PeftLoraConfig recipe_config() {
  io::PeftLoraConfig c;
  c.r = 8;
  c.lora_alpha = 16;
  c.lora_dropout = 0.0;
  c.target_modules_regex = kRecipeRegex;
  c.modules_to_save = {"embed_tokens", "resampler"};
  return c;
}

// [1, T] ids -> logits [1, T, V] of the text-only path.
at::Tensor logits(const Parameters& p, const io::ModelConfig& c, const at::Tensor& ids, const RunOptions& o = {}) {
  const MiniCPMO m(p, c, o);
  const at::Tensor pos = at::arange(ids.size(1), at::kLong).unsqueeze(0);
  return m.llm().logits(m.llm().hidden_states(m.llm().embed(ids), pos));
}

class Lora : public ::testing::Test {
 protected:
  io::ModelConfig config_ = testing::small_config();
  Parameters base_ = testing::small_parameters(config_, 3);
  at::Tensor ids_ = at::randint(0, 512, {1, 12}, at::kLong);
};

TEST_F(Lora, TargetsFollowPeftRegexAndListForms) {
  auto regex = resolve_lora_targets(config_, recipe_config());
  ASSERT_TRUE(regex.ok()) << regex.status();
  ASSERT_EQ(regex->size(), 4u * config_.num_hidden_layers);
  EXPECT_EQ(regex->front(), "llm.model.layers.0.self_attn.q_proj");
  io::PeftLoraConfig list = recipe_config();
  list.target_modules_regex.reset();
  // (A bare "q_proj" would also name the vision tower's q_proj, which PEFT would adapt too.)
  list.target_modules = {"llm.model.layers.0.self_attn.q_proj", "down_proj"};
  auto named = resolve_lora_targets(config_, list);
  ASSERT_TRUE(named.ok()) << named.status();
  EXPECT_THAT(*named, ::testing::ElementsAre("llm.model.layers.0.self_attn.q_proj", "llm.model.layers.0.mlp.down_proj",
                                             "llm.model.layers.1.mlp.down_proj"));
  list.target_modules = {"q_proj"};
  EXPECT_THAT(std::string(resolve_lora_targets(config_, list).status().message()),
              HasSubstr("'vpm.encoder.layers.0.self_attn.q_proj', which cannot take LoRA"));
}

TEST_F(Lora, TargetsThatCannotTakeLoraAreRefusedByName) {
  io::PeftLoraConfig c = recipe_config();
  c.target_modules_regex = R"(vpm\..*q_proj)";
  EXPECT_THAT(std::string(resolve_lora_targets(config_, c).status().message()),
              HasSubstr("'vpm.encoder.layers.0.self_attn.q_proj', which cannot take LoRA"));
  c.target_modules_regex = R"(llm\.model\.layers\.0\.self_attn)";
  EXPECT_THAT(std::string(resolve_lora_targets(config_, c).status().message()), HasSubstr("cannot take LoRA"));
  c.target_modules_regex = "nothing";
  EXPECT_THAT(std::string(resolve_lora_targets(config_, c).status().message()), HasSubstr("matches no module"));
  c.target_modules_regex = "(";
  EXPECT_THAT(std::string(resolve_lora_targets(config_, c).status().message()), HasSubstr("does not compile"));
}

TEST_F(Lora, AFreshAdapterLeavesTheOutputUnchanged) {
  auto adapter = init_adapter(base_, config_, recipe_config(), 1);
  ASSERT_TRUE(adapter.ok()) << adapter.status();
  EXPECT_EQ(adapter->tensors.count("llm.model.layers.1.self_attn.o_proj.lora_A.weight"), 1u);
  EXPECT_EQ(adapter->tensors.count("resampler.query"), 1u);
  EXPECT_EQ(adapter->tensors.count("llm.model.embed_tokens.weight"), 1u);
  const at::Tensor& a = adapter->tensors.at("llm.model.layers.0.self_attn.q_proj.lora_A.weight");
  EXPECT_LE(a.abs().max().item<float>(), 1.0 / std::sqrt(128.0));
  auto adapted = apply_adapter(base_, config_, *adapter);
  ASSERT_TRUE(adapted.ok()) << adapted.status();
  EXPECT_TRUE(at::equal(logits(*adapted, config_, ids_, run_options(adapter->config, false)), logits(base_, config_, ids_)));
}

TEST_F(Lora, UnmergedEqualsMergedAndDiffersFromBase) {
  auto adapter = init_adapter(base_, config_, recipe_config(), 1);
  ASSERT_TRUE(adapter.ok());
  for (auto& [name, t] : adapter->tensors) {
    if (name.find("lora_B") != std::string::npos) t = at::randn_like(t) * 0.1;
  }
  adapter->tensors.at("resampler.query") = adapter->tensors.at("resampler.query") + 1;  // a real copy
  auto unmerged = apply_adapter(base_, config_, *adapter);
  auto merged = merge_adapter(base_, config_, *adapter);
  ASSERT_TRUE(unmerged.ok() && merged.ok());
  const at::Tensor u = logits(*unmerged, config_, ids_, run_options(adapter->config, false));
  const at::Tensor m = logits(*merged, config_, ids_);
  EXPECT_TRUE(at::allclose(u, m, 1e-4, 1e-5)) << (u - m).abs().max().item<float>();
  EXPECT_GT((u - logits(base_, config_, ids_)).abs().max().item<float>(), 1e-2);
  // The base weights were not touched.
  EXPECT_FALSE(at::equal(base_.get("resampler.query"), adapter->tensors.at("resampler.query")));
}

TEST_F(Lora, PeftDirectoryRoundTrips) {
  testing::TempDir tmp;
  auto adapter = init_adapter(base_, config_, recipe_config(), 5);
  ASSERT_TRUE(adapter.ok());
  adapter->config.base_model_name_or_path = "openbmb/MiniCPM-o-2_6";
  const std::string dir = tmp.file("adapter");
  ASSERT_TRUE(io::write_peft_adapter(dir, *adapter).ok());
  EXPECT_THAT(std::vector<std::string>({"adapter_config.json", "adapter_model.safetensors"}),
              ::testing::UnorderedElementsAreArray([&] {
                std::vector<std::string> names;
                for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename());
                return names;
              }()));
  auto back = io::read_peft_adapter(dir);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->config.r, 8);
  EXPECT_EQ(back->config.lora_alpha, 16);
  EXPECT_EQ(*back->config.target_modules_regex, kRecipeRegex);
  EXPECT_EQ(back->config.modules_to_save, adapter->config.modules_to_save);
  EXPECT_EQ(back->config.base_model_name_or_path, "openbmb/MiniCPM-o-2_6");
  ASSERT_EQ(back->tensors.size(), adapter->tensors.size());
  for (const auto& [name, t] : adapter->tensors) EXPECT_TRUE(at::equal(back->tensors.at(name), t)) << name;
  // The file holds PEFT's key names.
  auto file = io::SafetensorsFile::open(dir + "/adapter_model.safetensors");
  ASSERT_TRUE(file.ok());
  EXPECT_NE((*file)->find("base_model.model.llm.model.layers.0.self_attn.q_proj.lora_A.weight"), nullptr);
  EXPECT_NE((*file)->find("base_model.model.resampler.query"), nullptr);
  // Never over an existing adapter, and no staging folder is left behind.
  EXPECT_EQ(io::write_peft_adapter(dir, *adapter).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(std::distance(fs::directory_iterator(tmp.path()), fs::directory_iterator()), 1);
}

TEST_F(Lora, MismatchedAdaptersAreRefusedNamingTheTensor) {
  auto adapter = init_adapter(base_, config_, recipe_config(), 1);
  ASSERT_TRUE(adapter.ok());
  const std::string a = "llm.model.layers.0.self_attn.k_proj.lora_A.weight";
  const auto refused = [&](io::PeftAdapter bad, const std::string& what) {
    const absl::Status s = apply_adapter(base_, config_, bad).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(s.message()), HasSubstr(what));
  };
  io::PeftAdapter wrong_rank = *adapter;
  wrong_rank.tensors[a] = at::zeros({4, 128});
  refused(wrong_rank, a + " has shape [4, 128]; expected [8, 128]");
  io::PeftAdapter half = *adapter;
  half.tensors.erase("llm.model.layers.0.self_attn.k_proj.lora_B.weight");
  refused(half, "only one of llm.model.layers.0.self_attn.k_proj.lora_A / lora_B");
  io::PeftAdapter unknown = *adapter;
  unknown.tensors["resampler.nonsense"] = at::zeros({1});
  refused(unknown, "'resampler.nonsense' names no parameter");
  io::PeftAdapter reshaped = *adapter;
  reshaped.tensors["resampler.query"] = at::zeros({3, 3});
  refused(reshaped, "'resampler.query' has shape [3, 3] but the base model's is [64, 128]");
}

TEST(PeftConfig, UnsupportedOptionsAreRefused) {
  EXPECT_THAT(std::string(io::parse_peft_config(R"({"peft_type":"IA3"})", "x").status().message()), HasSubstr("only LORA"));
  EXPECT_THAT(std::string(io::parse_peft_config(R"({"use_dora":true})", "x").status().message()), HasSubstr("DoRA"));
  EXPECT_THAT(std::string(io::parse_peft_config(R"({"rank_pattern":{"q":4}})", "x").status().message()),
              HasSubstr("rank_pattern"));
  EXPECT_THAT(std::string(io::parse_peft_config("[]", "cfg.json").status().message()), HasSubstr("cfg.json"));
  auto ok = io::parse_peft_config(R"({"r":16,"lora_alpha":32,"target_modules":["q_proj"],"use_rslora":true})", "x");
  ASSERT_TRUE(ok.ok());
  EXPECT_DOUBLE_EQ(ok->scaling(), 32 / 4.0);
}

// Gradients with per-layer recomputation equal those of the plain backward pass, dropout included
// (the recomputation reuses the masks drawn before each layer).
TEST_F(Lora, GradientCheckpointingGivesTheSameGradients) {
  io::PeftLoraConfig c = recipe_config();
  c.lora_dropout = 0.3;
  std::vector<at::Tensor> grads[2];
  for (int checkpointing = 0; checkpointing < 2; ++checkpointing) {
    auto adapter = init_adapter(base_, config_, c, 1);
    ASSERT_TRUE(adapter.ok());
    at::manual_seed(5);
    for (auto& [name, t] : adapter->tensors) {
      if (name.find("lora_B") != std::string::npos) t = at::randn_like(t, at::TensorOptions().dtype(at::kFloat)) * 0.1;
    }
    for (auto& [name, t] : adapter->tensors) t.requires_grad_(true);
    auto adapted = apply_adapter(base_, config_, *adapter);
    ASSERT_TRUE(adapted.ok());
    RunOptions o = run_options(c, /*training=*/true);
    o.gradient_checkpointing = checkpointing == 1;
    at::manual_seed(11);
    const at::Tensor out = logits(*adapted, config_, ids_, o);
    at::cross_entropy_loss(out.view({-1, 512}), ids_.view({-1})).backward();
    for (const auto& [name, t] : adapter->tensors) {
      if (name.find(".lora_") != std::string::npos) {
        ASSERT_TRUE(t.grad().defined()) << name;
      }
      // The text-only path leaves the resampler copy without a gradient.
      if (t.grad().defined()) grads[checkpointing].push_back(t.grad().clone());
    }
  }
  ASSERT_EQ(grads[0].size(), grads[1].size());
  for (size_t i = 0; i < grads[0].size(); ++i) {
    EXPECT_TRUE(at::allclose(grads[0][i], grads[1][i], 1e-5, 1e-7)) << i;
  }
}

}  // namespace
}  // namespace cpm::core::model
