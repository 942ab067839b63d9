// SPDX-License-Identifier: Apache-2.0
//
// Training steps replayed from CUDA graphs (train/step_graph.h) against the same steps launched
// eagerly: the tiny random model in float32 on CUDA, LoRA dropout on, the vision tower and the
// resampler trained. Skips itself without a GPU.
#include <ATen/ops/allclose.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/full.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/randn.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "common/device.h"
#include "model/load.h"
#include "model/random_checkpoint.h"
#include "test_util.h"
#include "train/trainer.h"

namespace cpm::core::train {
namespace {

// T tokens with one h x w image's query_num placeholders from position 4, the last 20 labelled.
Batch synthetic_batch(int64_t t, int64_t h, int64_t w, int64_t query_num, uint64_t seed) {
  at::manual_seed(seed);
  Batch b;
  b.input_ids = at::randint(1000, 150000, {1, t}, at::kLong);
  b.labels = at::full({1, t}, kIgnoreIndex, at::kLong);
  b.labels.narrow(1, t - 20, 20).copy_(at::randint(1000, 150000, {1, 20}, at::kLong));
  b.position_ids = at::arange(t, at::kLong).unsqueeze(0);
  b.attention_mask = at::ones({1, t}, at::kBool);
  b.pixel_values = {{at::randn({3, 14, h * w * 14})}};
  b.tgt_sizes = {{{h, w}}};
  b.image_bound = {{{4, 4 + query_num}}};
  return b;
}

TEST(TrainerGpu, CudaGraphStepsEqualEagerSteps) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  testing::TempDir dir;
  model::RandomCheckpointOptions options;
  options.seed = 3;
  options.base_tokenizer_json = CPM_QWEN_TOKENIZER_DIR "/tokenizer.json";
  ASSERT_TRUE(model::write_random_checkpoint(dir.file("tiny"), model::tiny_config(), options).ok());
  model::LoadOptions load;
  load.device = c10::Device(c10::kCUDA, 0);
  auto loaded = model::load_model(dir.file("tiny"), load);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const model::LoadedModel& m = **loaded;
  auto builder = ExampleBuilder::create(*m.tokenizer, m.chat_template, m.configs.preprocessor, {});
  ASSERT_TRUE(builder.ok());

  const int64_t q = m.configs.model.query_num;
  // A and B share their shapes; D is shorter and has another image size, but falls into the same
  // buckets (128 tokens, 64 patch slots, 64 labelled rows): all three replay one graph. C is
  // longer (192 tokens): a second graph.
  const Batch a = synthetic_batch(96, 4, 6, q, 1), b = synthetic_batch(96, 4, 6, q, 2),
              c = synthetic_batch(150, 5, 3, q, 3), d = synthetic_batch(100, 5, 5, q, 4);
  const std::vector<const Batch*> order = {&a, &b, &a, &d, &c, &a, &c, &b};

  std::vector<double> losses[2], norms[2];
  std::vector<bool> replayed;
  io::PeftAdapter adapters[2];
  for (int graphs = 0; graphs < 2; ++graphs) {
    TrainConfig config;
    config.lora.r = 8;
    config.lora.lora_alpha = 16;
    config.lora.lora_dropout = 0.1;
    config.lora.target_modules_regex = R"(llm\..*layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|o_proj))";
    config.lora.modules_to_save = {"resampler"};
    config.learning_rate = 1e-3;
    config.max_steps = static_cast<int64_t>(order.size());
    config.cuda_graphs = graphs == 1;
    config.shape_bucket = 64;  // both runs pad alike, so dropout draws the same masks
    config.output_dir = dir.file("out" + std::to_string(graphs));
    auto trainer = Trainer::create(m, *builder, {DatasetRecord{}}, {}, config);
    ASSERT_TRUE(trainer.ok()) << trainer.status();
    for (const Batch* batch : order) {
      auto r = (*trainer)->step(std::vector<Batch>{*batch});
      ASSERT_TRUE(r.ok()) << r.status();
      losses[graphs].push_back(r->loss);
      norms[graphs].push_back(r->grad_norm);
      if (graphs == 1) replayed.push_back(r->cuda_graph);
    }
    adapters[graphs] = (*trainer)->adapter();
  }
  // The first step of a bucket runs eagerly; from the second on, its graph replays with the new
  // batch's values.
  EXPECT_EQ(replayed, (std::vector<bool>{false, true, true, true, false, true, true, true}));
  for (size_t i = 0; i < order.size(); ++i) {
    EXPECT_NEAR(losses[1][i], losses[0][i], 1e-5 * std::abs(losses[0][i])) << "step " << i + 1;
    EXPECT_NEAR(norms[1][i], norms[0][i], 1e-4 * norms[0][i]) << "step " << i + 1;
  }
  // Different batches gave different losses (the replays read the new inputs).
  EXPECT_GT(std::abs(losses[1][1] - losses[1][0]), 1e-3);
  ASSERT_EQ(adapters[0].tensors.size(), adapters[1].tensors.size());
  for (const auto& [name, want] : adapters[0].tensors) {
    EXPECT_TRUE(at::allclose(adapters[1].tensors.at(name), want, 1e-4, 1e-6)) << name;
  }
}

}  // namespace
}  // namespace cpm::core::train
