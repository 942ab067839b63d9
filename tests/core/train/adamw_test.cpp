// SPDX-License-Identifier: Apache-2.0
#include "train/adamw.h"

#include <ATen/ops/allclose.h>
#include <ATen/ops/tensor.h>
#include <gtest/gtest.h>

#include <fstream>

#include "nlohmann/json.hpp"
#include "train/lr_schedule.h"

namespace cpm::core::train {
namespace {

using nlohmann::json;

json goldens() {
  std::ifstream in(CPM_TEST_SOURCE_DIR "/tests/data/train/adamw_goldens.json");
  return json::parse(in);
}

at::Tensor tensor(const json& values, const json& shape) {
  return at::tensor(values.get<std::vector<float>>()).reshape(shape.get<std::vector<int64_t>>());
}

// torch.optim.AdamW's updates, step by step (tests/core/train/make_adamw_goldens.py).
TEST(AdamW, MatchesTorchOptimAdamW) {
  const json g = goldens();
  AdamWOptions o;
  o.beta1 = g["betas"][0];
  o.beta2 = g["betas"][1];
  o.eps = g["eps"];
  o.weight_decay = g["weight_decay"];
  std::vector<TrainableParam> params;
  for (const auto& [name, shape] : g["shapes"].items()) {
    params.push_back({name, tensor(g["params"][name], shape).requires_grad_(true), g["decay"][name].get<bool>()});
  }
  AdamW opt(params, o);
  for (size_t step = 0; step < g["lrs"].size(); ++step) {
    for (const TrainableParam& p : opt.params()) {
      p.tensor.mutable_grad() = tensor(g["grads"][step][p.name], g["shapes"][p.name]);
    }
    opt.step(g["lrs"][step].get<double>());
    for (const TrainableParam& p : opt.params()) {
      const at::Tensor expected = tensor(g["after"][step][p.name], g["shapes"][p.name]);
      EXPECT_TRUE(at::allclose(p.tensor.detach(), expected, 1e-6, 1e-7)) << p.name << " after step " << step + 1;
    }
  }
  EXPECT_EQ(opt.steps(), 5);
}

TEST(AdamW, StateRoundTripsAndParamsWithoutGradsAreLeftAlone) {
  AdamW a({{"w", at::tensor({1.0f, 2.0f}).requires_grad_(true), true},
           {"frozen_this_step", at::tensor({3.0f}).requires_grad_(true), true}},
          {});
  a.params()[0].tensor.mutable_grad() = at::tensor({0.5f, -0.5f});
  a.step(0.1);
  EXPECT_EQ(a.params()[1].tensor.item<float>(), 3.0f);  // no grad: no decay, no update (as torch)
  AdamW b({{"w", at::tensor({1.0f, 2.0f}).requires_grad_(true), true},
           {"frozen_this_step", at::tensor({3.0f}).requires_grad_(true), true}},
          {});
  b.load_state(a.state());
  EXPECT_EQ(b.steps(), 1);
  EXPECT_THROW(b.load_state({}), std::invalid_argument);
}

TEST(LrSchedule, MatchesTransformersSchedules) {
  const json g = goldens()["schedule"];
  for (const auto& [name, kind] : {std::pair{"cosine", Schedule::kCosine}, std::pair{"linear", Schedule::kLinear},
                                   std::pair{"constant", Schedule::kConstant}}) {
    const LrSchedule s{kind, 1.0, g["warmup"], g["total"]};
    for (size_t i = 0; i < g["factors"][name].size(); ++i) {
      EXPECT_NEAR(s.at(static_cast<int64_t>(i)), g["factors"][name][i].get<double>(), 1e-12) << name << " step " << i;
    }
  }
  EXPECT_EQ(warmup_steps(1000, 0.01, 0), 10);
  EXPECT_EQ(warmup_steps(150, 0.01, 0), 2);  // ceil, as the HF Trainer
  EXPECT_EQ(warmup_steps(1000, 0.01, 7), 7);
}

TEST(AdamW, WeightDecaySkipsBiasesAndLayerNormsLikeTheHfTrainer) {
  EXPECT_FALSE(decays("resampler.attn.in_proj_bias"));
  EXPECT_FALSE(decays("vpm.encoder.layers.0.mlp.fc1.bias"));
  EXPECT_FALSE(decays("vpm.encoder.layers.3.layer_norm1.weight"));
  EXPECT_FALSE(decays("vpm.post_layernorm.weight"));
  EXPECT_FALSE(decays("resampler.ln_kv.weight"));
  EXPECT_TRUE(decays("resampler.query"));
  EXPECT_TRUE(decays("vpm.embeddings.patch_embedding.weight"));
  EXPECT_TRUE(decays("llm.model.layers.0.self_attn.q_proj.lora_A.weight"));
  EXPECT_TRUE(decays("llm.model.norm.weight"));  // Qwen2RMSNorm is not an nn.LayerNorm
}

}  // namespace
}  // namespace cpm::core::train
