// SPDX-License-Identifier: Apache-2.0
#include "train/trainer.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/equal.h>
#include <c10/core/GradMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <filesystem>

#include "common/host_memory.h"
#include "io/peft_adapter.h"
#include "model/adapter.h"
#include "model/random_checkpoint.h"
#include "test_util.h"

namespace cpm::core::train {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

// The tiny random checkpoint (real tokenizer, real architecture at toy size) and 32 real formulas
// from the LaTeX_OCR validation split (the first 32 with at most 24 LaTeX tokens).
class TrainerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // What cpm-tool train and cpmd do on the CPU (common/host_memory.h): without it, 100 steps of
    // the fit below took 44.6 M minor faults and more system than user time; a step takes 0.29 s
    // instead of 0.80 s.
    keep_freed_memory_for_reuse();
    dir_ = new testing::TempDir();
    model::RandomCheckpointOptions options;
    options.seed = 1;
    options.base_tokenizer_json = CPM_QWEN_TOKENIZER_DIR "/tokenizer.json";
    const std::string path = dir_->file("tiny");
    if (auto s = model::write_random_checkpoint(path, model::tiny_config(), options); !s.ok()) {
      throw std::runtime_error(std::string(s.message()));
    }
    auto loaded = model::load_model(path, {});
    if (!loaded.ok()) throw std::runtime_error(std::string(loaded.status().message()));
    model_ = loaded->release();
    // Weights of std 0.02 give the resampler uniform attention: every image resamples to nearly
    // the same 64 rows (cosine 0.9999 between two formulas), which a short CPU fit cannot pull
    // apart. Sharper attention makes the images distinguishable from the first step (cosine 0.64).
    {
      at::NoGradGuard no_grad;
      model_->params.get("resampler.attn.in_proj_weight").mul_(30);
    }
    auto builder = ExampleBuilder::create(*model_->tokenizer, model_->chat_template, model_->configs.preprocessor, {});
    if (!builder.ok()) throw std::runtime_error(std::string(builder.status().message()));
    builder_ = new ExampleBuilder(*std::move(builder));
    auto file = read_dataset(CPM_TEST_SOURCE_DIR "/tests/data/train/fit32/labels.csv");
    if (!file.ok()) throw std::runtime_error(std::string(file.status().message()));
    records_ = new std::vector<DatasetRecord>(file->records);
  }
  static void TearDownTestSuite() {
    delete records_;
    delete builder_;
    delete model_;
    delete dir_;
  }

  TrainConfig config(const std::string& out) const {
    TrainConfig c;
    c.lora.r = 16;
    c.lora.lora_alpha = 32;
    c.lora.lora_dropout = 0.0;
    c.lora.target_modules_regex = R"(llm\..*layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|o_proj))";
    c.lora.modules_to_save = {"resampler"};
    c.learning_rate = 1e-3;
    c.warmup_ratio = 0;
    c.output_dir = tmp_.file(out);
    return c;
  }

  static testing::TempDir* dir_;
  static model::LoadedModel* model_;
  static ExampleBuilder* builder_;
  static std::vector<DatasetRecord>* records_;
  testing::TempDir tmp_;
};
testing::TempDir* TrainerTest::dir_ = nullptr;
model::LoadedModel* TrainerTest::model_ = nullptr;
ExampleBuilder* TrainerTest::builder_ = nullptr;
std::vector<DatasetRecord>* TrainerTest::records_ = nullptr;

TEST_F(TrainerTest, FitsThirtyTwoFormulasAndLeavesTheBaseModelUntouched) {
  std::map<std::string, at::Tensor> before;
  for (const auto& [name, t] : model_->params.all()) before[name] = t.clone();
  // What a 2-layer, 128-wide random model needs to learn the 32 formulas and which image shows
  // which one:
  // - LoRA of rank 64 on every projection, and the embeddings (tied to the output) and the final
  //   norm trained, so that the logits can grow beyond what std-0.02 embeddings allow (with LoRA
  //   and the norm alone the loss is still 8.2 after 450 steps).
  // - The vision tower and the resampler frozen. Trained from random weights, they are pulled
  //   together by the first steps, which fit the formulas' token statistics, for which the image is
  //   noise: the part of the answer's first hidden state that differs between images fell from 19%
  //   to 2% in 40 steps; after 300 steps the loss with another record's image was 0.85 against 0.80
  //   with its own, and after 600 steps greedy decoding still picked the wrong formula for most
  //   images (exact match 0.28). Frozen, the images stay apart and the LLM learns to read them.
  // - 400 steps (50 epochs) at 3e-3, cosine to 0. Exact match after 300 steps 0.44, 360 0.97 (1.0
  //   with seed 1), 450 1.0 (seeds 42, 1, 7); 2e-3 and 5e-3 fit less in as many steps.
  TrainConfig c = config("fit");
  c.lora.r = 64;
  c.lora.lora_alpha = 128;
  c.lora.target_modules_regex = R"(llm\..*layers\.\d+\.(self_attn|mlp)\.[a-z_]+_proj)";
  c.lora.modules_to_save = {"embed_tokens", "llm.model.norm"};
  c.tune_vision = false;
  c.learning_rate = 3e-3;
  c.batch_size = 4;
  c.eval_max_new_tokens = 48;  // the longest formula here has 24 LaTeX tokens
  c.max_steps = 400;
  auto trainer = Trainer::create(*model_, *builder_, *records_, *records_, c);
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  std::vector<double> losses;
  const auto start = std::chrono::steady_clock::now();
  while (!(*trainer)->done()) {
    auto r = (*trainer)->step();
    ASSERT_TRUE(r.ok()) << r.status();
    losses.push_back(r->loss);
    if (r->step % 50 == 0) {
      std::printf("step %lld loss %.4f lr %.2e grad norm %.3f, %.3f s/step\n",
                  static_cast<long long>(r->step), r->loss, r->learning_rate, r->grad_norm,
                  r->elapsed_seconds / static_cast<double>(r->step));
    }
  }
  const double first = losses.front();
  double last = 0;
  for (size_t i = losses.size() - 8; i < losses.size(); ++i) last += losses[i] / 8;
  std::printf("loss %.4f -> %.4f (mean of the last 8 steps) in %zu steps, %.1f s\n", first, last, losses.size(),
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  EXPECT_LT(last, 0.2 * first);

  // Greedy decoding of the training images reproduces most of their formulas.
  auto eval = (*trainer)->evaluate();
  ASSERT_TRUE(eval.ok()) << eval.status();
  std::printf("on the training formulas: exact match %.3f, edit distance %.3f, BLEU-4 %.3f, eval loss %.4f\n",
              eval->metrics.exact_match, eval->metrics.normalized_edit_distance, eval->metrics.bleu4, eval->loss);
  ASSERT_EQ(eval->predictions.size(), records_->size());
  for (size_t i = 0; i < 4; ++i) {
    std::printf("  predicted %s\n  reference %s\n", eval->predictions[i].c_str(),
                (*records_)[i].conversation.turns.back().content.c_str());
  }
  EXPECT_GE(eval->metrics.exact_match, 0.5);

  for (const auto& [name, t] : model_->params.all()) EXPECT_TRUE(at::equal(t, before.at(name))) << name;
}

// Losses and weights after stopping and resuming from a checkpoint equal those of one run:
// dropout draws, data order, optimizer moments and the schedule all continue where they stopped.
TEST_F(TrainerTest, ResumingFromACheckpointEqualsAnUninterruptedRun) {
  TrainConfig c = config("straight");
  c.lora.lora_dropout = 0.1;
  c.batch_size = 2;
  c.gradient_accumulation_steps = 2;
  c.max_steps = 4;
  c.save_steps = 2;
  c.warmup_steps = 1;
  const std::vector<DatasetRecord> train(records_->begin(), records_->begin() + 6);
  std::vector<double> straight;
  io::PeftAdapter straight_adapter;
  {
    auto t = Trainer::create(*model_, *builder_, train, {}, c);
    ASSERT_TRUE(t.ok()) << t.status();
    while (!(*t)->done()) {
      auto r = (*t)->step();
      ASSERT_TRUE(r.ok()) << r.status();
      straight.push_back(r->loss);
    }
    straight_adapter = (*t)->adapter();
  }
  c.output_dir = tmp_.file("resumed");
  std::vector<double> resumed;
  {
    auto t = Trainer::create(*model_, *builder_, train, {}, c);
    ASSERT_TRUE(t.ok()) << t.status();
    for (int i = 0; i < 2; ++i) {
      auto r = (*t)->step();
      ASSERT_TRUE(r.ok()) << r.status();
      resumed.push_back(r->loss);
    }
    ASSERT_TRUE((*t)->checkpoint_due());
    { const absl::Status saved = (*t)->save_checkpoint(); ASSERT_TRUE(saved.ok()) << saved; }
    // A step past the checkpoint that is lost (the process dies before the next one).
    ASSERT_TRUE((*t)->step().ok());
  }
  auto t = Trainer::create(*model_, *builder_, train, {}, c);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->resumed_from(), 2);
  while (!(*t)->done()) {
    auto r = (*t)->step();
    ASSERT_TRUE(r.ok()) << r.status();
    resumed.push_back(r->loss);
  }
  EXPECT_EQ(resumed, straight);
  const io::PeftAdapter a = (*t)->adapter();
  ASSERT_EQ(a.tensors.size(), straight_adapter.tensors.size());
  for (const auto& [name, tensor] : a.tensors) EXPECT_TRUE(at::equal(tensor, straight_adapter.tensors.at(name))) << name;
}

TEST_F(TrainerTest, CheckpointsArePeftAdaptersAndOnlyTheNewestAreKept) {
  TrainConfig c = config("pruned");
  c.max_steps = 3;
  c.save_steps = 1;
  c.save_total_limit = 2;
  const std::vector<DatasetRecord> train(records_->begin(), records_->begin() + 2);
  auto t = Trainer::create(*model_, *builder_, train, {}, c);
  ASSERT_TRUE(t.ok()) << t.status();
  while (!(*t)->done()) {
    ASSERT_TRUE((*t)->step().ok());
    ASSERT_TRUE((*t)->checkpoint_due());
    { const absl::Status saved = (*t)->save_checkpoint(); ASSERT_TRUE(saved.ok()) << saved; }
  }
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(c.output_dir)) names.push_back(e.path().filename());
  EXPECT_THAT(names, ::testing::UnorderedElementsAre("checkpoint-2", "checkpoint-3"));
  EXPECT_EQ(latest_checkpoint(c.output_dir), c.output_dir + "/checkpoint-3");
  auto adapter = io::read_peft_adapter(c.output_dir + "/checkpoint-3");
  ASSERT_TRUE(adapter.ok()) << adapter.status();
  EXPECT_EQ(adapter->config.r, 16);
  EXPECT_THAT(adapter->config.modules_to_save, ::testing::Contains("vpm"));  // tune_vision
  const io::PeftAdapter live = (*t)->adapter();
  for (const auto& [name, tensor] : live.tensors) EXPECT_TRUE(at::equal(adapter->tensors.at(name), tensor)) << name;
  for (const char* f : {"optimizer.safetensors", "rng.safetensors", "trainer_state.json"}) {
    EXPECT_TRUE(fs::exists(c.output_dir + "/checkpoint-3/" + f)) << f;
  }
  // Done: another step is refused.
  EXPECT_EQ((*t)->step().status().code(), absl::StatusCode::kFailedPrecondition);
}

// tune_llm (the recipe's full fine-tuning, without LoRA): every LLM tensor is trained as a copy
// beside the base, which stays bit-identical; the loss on a repeated batch falls; checkpoints hold
// the whole trained LLM and load back as an adapter.
TEST_F(TrainerTest, TuneLlmTrainsTheWholeLlmBesideTheBase) {
  std::map<std::string, at::Tensor> before;
  for (const auto& [name, t] : model_->params.all()) before[name] = t.clone();
  TrainConfig c = config("full");
  c.use_lora = false;
  c.tune_llm = true;
  c.tune_vision = false;
  c.lora.modules_to_save = {};
  c.max_steps = 6;
  c.save_steps = 6;
  c.schedule = Schedule::kConstant;
  auto t = Trainer::create(*model_, *builder_, *records_, {}, c);
  ASSERT_TRUE(t.ok()) << t.status();
  std::vector<TrainingExample> examples;
  for (int i = 0; i < 2; ++i) {
    auto ex = builder_->build((*records_)[i].conversation);
    ASSERT_TRUE(ex.ok());
    examples.push_back(*std::move(ex));
  }
  const std::vector<Batch> batch{collate(examples)};
  std::vector<double> losses;
  for (int i = 0; i < 6; ++i) {
    auto r = (*t)->step(batch);
    ASSERT_TRUE(r.ok()) << r.status();
    losses.push_back(r->loss);
  }
  EXPECT_LT(losses.back(), 0.9 * losses.front()) << losses.front() << " -> " << losses.back();
  const io::PeftAdapter a = (*t)->adapter();
  size_t llm = 0;
  for (const auto& [name, base] : before) {
    if (name.rfind("llm.", 0) != 0) continue;
    ++llm;
    ASSERT_TRUE(a.tensors.count(name)) << name;
    EXPECT_FALSE(at::equal(a.tensors.at(name), base)) << name << " was not trained";
  }
  EXPECT_GT(llm, 10u);
  for (const auto& [name, t0] : before) EXPECT_TRUE(at::equal(model_->params.get(name), t0)) << name;
  ASSERT_TRUE((*t)->save_checkpoint().ok());
  auto saved = io::read_peft_adapter(tmp_.file("full") + "/checkpoint-6");
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_EQ(saved->tensors.size(), a.tensors.size());
  EXPECT_TRUE(model::apply_adapter(model_->params, model_->configs.model, *saved).ok());
}

// Shape buckets (what lets steps of nearby shapes share a CUDA graph) pad the length, the
// labelled rows and each image chunk's patch slots; the padding is masked or ignored, so the
// losses, gradient norms and trained weights are those of the unpadded batches.
TEST_F(TrainerTest, ShapeBucketsLeaveTheTrainingUnchanged) {
  std::vector<Batch> batches;
  for (int first : {0, 2}) {
    std::vector<TrainingExample> examples;
    for (int i = first; i < first + 2; ++i) {
      auto ex = builder_->build((*records_)[i].conversation);
      ASSERT_TRUE(ex.ok());
      examples.push_back(*std::move(ex));
    }
    batches.push_back(collate(examples));
  }
  std::vector<double> losses[2], norms[2];
  io::PeftAdapter adapters[2];
  for (int bucketed = 0; bucketed < 2; ++bucketed) {
    // No dropout: padded activations draw their masks at other offsets of the random stream.
    TrainConfig c = config(bucketed ? "bucket64" : "bucket1");
    c.lora.modules_to_save = {"resampler"};  // tune_vision adds the vision tower
    c.shape_bucket = bucketed ? 64 : 1;
    c.max_steps = 3;
    auto t = Trainer::create(*model_, *builder_, *records_, {}, c);
    ASSERT_TRUE(t.ok()) << t.status();
    for (int i = 0; i < 3; ++i) {
      auto r = (*t)->step(std::vector<Batch>{batches[i % 2]});
      ASSERT_TRUE(r.ok()) << r.status();
      losses[bucketed].push_back(r->loss);
      norms[bucketed].push_back(r->grad_norm);
    }
    adapters[bucketed] = (*t)->adapter();
  }
  for (int i = 0; i < 3; ++i) {
    EXPECT_NEAR(losses[1][i], losses[0][i], 1e-5 * losses[0][i]) << "step " << i + 1;
    EXPECT_NEAR(norms[1][i], norms[0][i], 1e-4 * norms[0][i]) << "step " << i + 1;
  }
  // The weights cannot be compared as closely: Adam moves an element whose gradient is rounding
  // noise (the keys' biases, whose exact gradient is 0) by about lr either way. Nothing may move
  // further than that noise allows in 3 steps.
  for (const auto& [name, want] : adapters[0].tensors) {
    EXPECT_LE((adapters[1].tensors.at(name) - want).abs().max().item<double>(), 2 * 3 * 1e-3) << name;
  }
}

// in_place trains the base model's own resampler to exactly what the copy becomes (the copy leaves
// the base as it was), and a resumed in-place job loads its checkpoint into the base's tensors.
TEST_F(TrainerTest, InPlaceTrainsTheBaseTensorsAsTheCopiesWould) {
  const auto load = [] {
    auto own = model::load_model(dir_->file("tiny"), {});
    if (!own.ok()) throw std::runtime_error(std::string(own.status().message()));
    at::NoGradGuard no_grad;
    (*own)->params.get("resampler.attn.in_proj_weight").mul_(30);  // as SetUpTestSuite
    return *std::move(own);
  };
  const std::unique_ptr<model::LoadedModel> base = load();
  const std::string name = "resampler.attn.in_proj_weight";
  const at::Tensor before = base->params.get(name).clone();
  const std::vector<DatasetRecord> train(records_->begin(), records_->begin() + 4);
  std::vector<double> losses[2];
  io::PeftAdapter adapters[2];
  TrainConfig c = config("copies");
  c.max_steps = 3;
  c.batch_size = 2;
  for (int in_place = 0; in_place < 2; ++in_place) {
    c.in_place = in_place == 1;
    c.output_dir = tmp_.file(in_place ? "in_place" : "copies");
    auto t = Trainer::create(*base, *builder_, train, {}, c);
    ASSERT_TRUE(t.ok()) << t.status();
    while (!(*t)->done()) {
      auto r = (*t)->step();
      ASSERT_TRUE(r.ok()) << r.status();
      losses[in_place].push_back(r->loss);
    }
    { const absl::Status saved = (*t)->save_checkpoint(); ASSERT_TRUE(saved.ok()) << saved; }
    adapters[in_place] = (*t)->adapter();
    if (!c.in_place) {
      EXPECT_TRUE(base->params.get(name).equal(before)) << "the copies changed the base";
    }
  }
  EXPECT_EQ(losses[1], losses[0]);
  ASSERT_FALSE(adapters[0].tensors.at(name).equal(before));
  EXPECT_TRUE(adapters[1].tensors.at(name).equal(adapters[0].tensors.at(name)));
  EXPECT_TRUE(base->params.get(name).equal(adapters[0].tensors.at(name))) << "in place left the base as it was";

  // A fresh base resumed from the in-place job's last checkpoint holds the trained tensor itself.
  const std::unique_ptr<model::LoadedModel> fresh = load();
  auto resumed = Trainer::create(*fresh, *builder_, train, {}, c);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ((*resumed)->resumed_from(), 3);
  EXPECT_TRUE(fresh->params.get(name).equal(adapters[1].tensors.at(name)));

  // A checkpoint that cannot be restored (its optimizer state cut short) leaves the base as it was.
  const std::unique_ptr<model::LoadedModel> other = load();
  c.output_dir = tmp_.file("broken");
  fs::copy(tmp_.file("in_place"), c.output_dir, fs::copy_options::recursive);
  for (const auto& entry : fs::directory_iterator(c.output_dir)) {
    if (fs::exists(entry.path() / "optimizer.safetensors")) fs::resize_file(entry.path() / "optimizer.safetensors", 100);
  }
  EXPECT_FALSE(Trainer::create(*other, *builder_, train, {}, c).ok());
  EXPECT_TRUE(other->params.get(name).equal(before));
}

TEST_F(TrainerTest, InvalidConfigsAreRefusedNamingTheField) {
  const auto refused = [&](TrainConfig c, absl::StatusCode code, const std::string& what) {
    auto t = Trainer::create(*model_, *builder_, *records_, {}, c);
    ASSERT_FALSE(t.ok());
    EXPECT_EQ(t.status().code(), code);
    EXPECT_THAT(std::string(t.status().message()), HasSubstr(what));
  };
  TrainConfig c = config("bad");
  c.tune_llm = true;
  refused(c, absl::StatusCode::kInvalidArgument, "tune_llm and use_lora");
  c = config("bad");
  c.batch_size = 0;
  refused(c, absl::StatusCode::kInvalidArgument, "batch_size");
  c = config("bad");
  c.lora.target_modules_regex = R"(vpm\..*fc1)";
  refused(c, absl::StatusCode::kInvalidArgument, "cannot take LoRA");
  c = config("bad");
  c.lora.modules_to_save = {"no_such_module"};
  refused(c, absl::StatusCode::kInvalidArgument, "'no_such_module' matches no module");
  EXPECT_EQ(Trainer::create(*model_, *builder_, {}, {}, config("empty")).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace cpm::core::train
