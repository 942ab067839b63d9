// SPDX-License-Identifier: Apache-2.0
#include "serve/generation.h"
#include "serve/static_decode.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/full.h>
#include <ATen/ops/tensor.h>
#include <gtest/gtest.h>

#include <fstream>

#include "io/safetensors.h"
#include "core/model/golden_util.h"
#include "nlohmann/json.hpp"

namespace cpm::core::serve {
namespace {

// The tiny transformers Qwen2 of tests/data/model (see tests/core/model/make_qwen2_goldens.py).
struct Tiny {
  io::SafetensorsCheckpoint checkpoint;
  io::ModelConfig config;
  model::Parameters params;
};

Tiny& tiny() {
  static Tiny* t = [] {
    auto ckpt = io::SafetensorsCheckpoint::open(CPM_TEST_SOURCE_DIR "/tests/data/model/qwen2_tiny.safetensors");
    if (!ckpt.ok()) throw std::runtime_error(std::string(ckpt.status().message()));
    const io::ModelConfig c = testing::llm_config_from(testing::golden_meta(*ckpt, "golden.logits"));
    model::Parameters p;
    for (const auto& spec : model::qwen2_parameter_specs(c, "llm")) p.set(spec.name, ckpt->tensor(spec.name)->clone());
    return new Tiny{std::move(*ckpt), c, std::move(p)};
  }();
  return *t;
}

TEST(KvCache, IncrementalLogitsEqualTheFullForward) {
  const model::Qwen2ForCausalLM llm(tiny().params, "llm", tiny().config);
  const at::Tensor ids = tiny().checkpoint.tensor("golden.input_ids")->narrow(0, 0, 1);  // [1, 12]
  const auto positions = [](int64_t from, int64_t n) { return at::arange(from, from + n, at::kLong).unsqueeze(0); };
  const at::Tensor full = llm.logits(llm.hidden_states(llm.embed(ids), positions(0, 12)));
  model::KvCache cache;
  llm.hidden_states(llm.embed(ids.narrow(1, 0, 8)), positions(0, 8), &cache);
  EXPECT_EQ(cache.length(), 8);
  for (int64_t i = 8; i < 12; ++i) {
    const at::Tensor step = llm.logits(llm.hidden_states(llm.embed(ids.narrow(1, i, 1)), positions(i, 1), &cache));
    const double err = ((step[0][0] - full[0][i]).abs().max() / full[0][i].abs().max()).item<double>();
    EXPECT_LT(err, 1e-5) << "position " << i;
  }
  EXPECT_EQ(cache.length(), 12);
}

TEST(GenerateGreedy, EqualsRecomputingTheWholeSequenceEachStep) {
  const model::Qwen2ForCausalLM llm(tiny().params, "llm", tiny().config);
  at::Tensor ids = tiny().checkpoint.tensor("golden.input_ids")->narrow(0, 1, 1).clone();  // [1, 12]
  const Generation g = generate_greedy(llm, llm.embed(ids), {.max_new_tokens = 10, .stop_ids = {}});
  ASSERT_EQ(g.tokens.size(), 10u);
  EXPECT_EQ(g.finish, FinishReason::kLength);
  for (int step = 0; step < 10; ++step) {
    const int64_t t = ids.size(1);
    const at::Tensor logits = llm.logits(llm.hidden_states(llm.embed(ids), at::arange(t, at::kLong).unsqueeze(0)));
    const int64_t next = logits[0][t - 1].argmax().item<int64_t>();
    EXPECT_EQ(next, g.tokens[static_cast<size_t>(step)]) << "step " << step;
    ids = at::cat({ids, at::full({1, 1}, next, at::kLong)}, 1);
  }
}

TEST(GenerateGreedy, StopsAtAStopId) {
  const model::Qwen2ForCausalLM llm(tiny().params, "llm", tiny().config);
  const at::Tensor ids = tiny().checkpoint.tensor("golden.input_ids")->narrow(0, 0, 1);
  const Generation free = generate_greedy(llm, llm.embed(ids), {.max_new_tokens = 6, .stop_ids = {}});
  ASSERT_EQ(free.tokens.size(), 6u);
  const Generation stopped = generate_greedy(llm, llm.embed(ids), {.max_new_tokens = 6, .stop_ids = {free.tokens[2]}});
  // Stops at the first occurrence of the stop id, which it includes.
  const auto first = std::find(free.tokens.begin(), free.tokens.end(), free.tokens[2]);
  EXPECT_EQ(stopped.tokens, std::vector<int32_t>(free.tokens.begin(), first + 1));
  EXPECT_EQ(stopped.finish, FinishReason::kStop);
}

}  // namespace
}  // namespace cpm::core::serve

namespace cpm::core::serve {
namespace {

// transformers' generate() from inputs_embeds on the same tiny model
// (tests/core/model/make_generation_goldens.py): the same 16 greedy tokens.
TEST(GenerateGreedy, MatchesTransformersGenerate) {
  std::ifstream in(CPM_TEST_SOURCE_DIR "/tests/data/model/qwen2_tiny_greedy.json");
  const auto goldens = nlohmann::json::parse(in);
  const model::Qwen2ForCausalLM llm(tiny().params, "llm", tiny().config);
  ASSERT_EQ(goldens["cases"].size(), 2u);
  for (const auto& c : goldens["cases"]) {
    const std::vector<int64_t> prompt = c["prompt"];
    const at::Tensor ids = at::tensor(prompt, at::kLong).unsqueeze(0);
    const Generation g = generate_greedy(llm, llm.embed(ids), {.max_new_tokens = 16, .stop_ids = {}});
    EXPECT_EQ(g.tokens, c["greedy"].get<std::vector<int32_t>>()) << "row " << c["row"];
  }
}

}  // namespace
}  // namespace cpm::core::serve

namespace cpm::core::serve {
namespace {

TEST(GenerateSampled, SeededAndTopKOneEqualsGreedy) {
  const model::Qwen2ForCausalLM llm(tiny().params, "llm", tiny().config);
  const at::Tensor ids = tiny().checkpoint.tensor("golden.input_ids")->narrow(0, 0, 1);
  const GreedyOptions limits{.max_new_tokens = 12, .stop_ids = {}};
  SamplingOptions one;
  one.top_k = 1;
  one.repetition_penalty = 1.0;
  EXPECT_EQ(generate_sampled(llm, llm.embed(ids), limits, one, 5).tokens,
            generate_greedy(llm, llm.embed(ids), limits).tokens);
  const SamplingOptions chat;  // chat()'s defaults
  const Generation a = generate_sampled(llm, llm.embed(ids), limits, chat, 123);
  const Generation b = generate_sampled(llm, llm.embed(ids), limits, chat, 123);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.tokens.size(), 12u);
}

}  // namespace
}  // namespace cpm::core::serve

namespace cpm::core::serve {
namespace {

TEST(GenerateGreedyBatch, LeftPaddedBatchEqualsEachPromptAlone) {
  const model::Qwen2ForCausalLM llm(tiny().params, "llm", tiny().config);
  const at::Tensor ids = *tiny().checkpoint.tensor("golden.input_ids");  // [2, 12]
  // Prompts of 12, 5 and 9 tokens: two of them left-padded in the batch.
  const std::vector<at::Tensor> prompt_ids = {ids[0], ids[1].narrow(0, 0, 5), ids[1].narrow(0, 3, 9)};
  std::vector<at::Tensor> prompts;
  for (const at::Tensor& p : prompt_ids) prompts.push_back(llm.embed(p.unsqueeze(0))[0]);
  const GreedyOptions limits{.max_new_tokens = 10, .stop_ids = {}};
  const std::vector<Generation> batch = generate_greedy_batch(llm, prompts, limits);
  ASSERT_EQ(batch.size(), 3u);
  for (size_t i = 0; i < prompts.size(); ++i) {
    const Generation alone = generate_greedy(llm, prompts[i].unsqueeze(0), limits);
    EXPECT_EQ(batch[i].tokens, alone.tokens) << "prompt " << i;
  }
  // A stop id ends its own row only.
  const Generation first = generate_greedy(llm, prompts[1].unsqueeze(0), limits);
  const std::vector<Generation> stopped =
      generate_greedy_batch(llm, prompts, {.max_new_tokens = 10, .stop_ids = {first.tokens[0]}});
  EXPECT_EQ(stopped[1].tokens, std::vector<int32_t>{first.tokens[0]});
  EXPECT_EQ(stopped[1].finish, FinishReason::kStop);
}

// The static-cache decoder (the CUDA-graph path's step, run eagerly here) gives the same tokens and
// finish reasons as the growing cache, with and without stops.
TEST(GenerateGreedyBatchStatic, EqualsTheGrowingCache) {
  const model::Qwen2ForCausalLM llm(tiny().params, "llm", tiny().config);
  const at::Tensor ids = *tiny().checkpoint.tensor("golden.input_ids");  // [2, 12]
  const std::vector<at::Tensor> prompt_ids = {ids[0], ids[1].narrow(0, 0, 5), ids[1].narrow(0, 3, 9)};
  std::vector<at::Tensor> prompts;
  for (const at::Tensor& p : prompt_ids) prompts.push_back(llm.embed(p.unsqueeze(0))[0]);
  for (const GreedyOptions& limits : {GreedyOptions{.max_new_tokens = 12, .stop_ids = {}},
                                      GreedyOptions{.max_new_tokens = 1, .stop_ids = {}}}) {
    const std::vector<Generation> dynamic = generate_greedy_batch(llm, prompts, limits);
    const std::vector<Generation> fixed = generate_greedy_batch_static(llm, prompts, limits);
    for (size_t i = 0; i < prompts.size(); ++i) {
      EXPECT_EQ(fixed[i].tokens, dynamic[i].tokens) << "prompt " << i;
      EXPECT_EQ(fixed[i].finish, dynamic[i].finish);
    }
  }
  const std::vector<Generation> plain = generate_greedy_batch(llm, prompts, {.max_new_tokens = 12, .stop_ids = {}});
  const GreedyOptions stops{.max_new_tokens = 12, .stop_ids = {plain[0].tokens[3], plain[2].tokens[0]}};
  const std::vector<Generation> dynamic = generate_greedy_batch(llm, prompts, stops);
  const std::vector<Generation> fixed = generate_greedy_batch_static(llm, prompts, stops);
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(fixed[i].tokens, dynamic[i].tokens) << "prompt " << i;
    EXPECT_EQ(fixed[i].finish, dynamic[i].finish);
  }
  EXPECT_EQ(fixed[2].finish, FinishReason::kStop);
}

// Tokens are handed out as they are produced, row by row, and a row whose callback says stop ends
// there while the others go on; both decoders behave the same.
TEST(GenerateGreedyBatch, StreamsTokensAndStopsRowsOnRequest) {
  const model::Qwen2ForCausalLM llm(tiny().params, "llm", tiny().config);
  const at::Tensor ids = *tiny().checkpoint.tensor("golden.input_ids");  // [2, 12]
  const std::vector<at::Tensor> prompts = {llm.embed(ids[0].unsqueeze(0))[0], llm.embed(ids[1].unsqueeze(0))[0]};
  const std::vector<Generation> plain = generate_greedy_batch(llm, prompts, {.max_new_tokens = 8, .stop_ids = {}});
  for (const bool fixed : {false, true}) {
    std::vector<std::vector<int32_t>> streamed(2);
    GreedyOptions options{.max_new_tokens = 8, .stop_ids = {}};
    options.on_token = [&](size_t row, int32_t token) {
      streamed[row].push_back(token);
      return !(row == 1 && streamed[row].size() == 3);  // row 1 is cancelled after 3 tokens
    };
    const std::vector<Generation> out =
        fixed ? generate_greedy_batch_static(llm, prompts, options) : generate_greedy_batch(llm, prompts, options);
    EXPECT_EQ(out[0].tokens, plain[0].tokens);
    EXPECT_EQ(streamed[0], plain[0].tokens);
    EXPECT_EQ(out[1].tokens, std::vector<int32_t>(plain[1].tokens.begin(), plain[1].tokens.begin() + 3));
    EXPECT_EQ(out[1].finish, FinishReason::kLength);
    EXPECT_EQ(streamed[1], out[1].tokens);
  }
  std::vector<int32_t> single;
  GreedyOptions options{.max_new_tokens = 8, .stop_ids = {}};
  options.on_token = [&](size_t, int32_t token) {
    single.push_back(token);
    return single.size() < 5;
  };
  const Generation alone = generate_greedy(llm, prompts[0].unsqueeze(0), options);
  EXPECT_EQ(alone.tokens, single);
  EXPECT_EQ(alone.tokens.size(), 5u);
}

}  // namespace
}  // namespace cpm::core::serve

namespace cpm::core::serve {
namespace {

// Left-padded sampled batches: each row draws from its own generator, so it equals the prompt
// sampled alone with the same options and seed, whatever the other rows do or when they stop.
TEST(GenerateSampledBatch, EachRowEqualsThePromptSampledAlone) {
  const model::Qwen2ForCausalLM llm(tiny().params, "llm", tiny().config);
  const at::Tensor ids = *tiny().checkpoint.tensor("golden.input_ids");  // [2, 12]
  const std::vector<at::Tensor> prompt_ids = {ids[0], ids[1].narrow(0, 0, 5), ids[1].narrow(0, 3, 9)};
  std::vector<at::Tensor> prompts;
  for (const at::Tensor& p : prompt_ids) prompts.push_back(llm.embed(p.unsqueeze(0))[0]);
  const std::vector<uint64_t> seeds = {7, 7, 1234};  // rows 0 and 1 share a seed, not a prompt
  SamplingOptions hot;
  hot.temperature = 1.3;
  hot.top_k = 0;
  hot.top_p = 0.95;
  SamplingOptions narrow;
  narrow.top_k = 5;
  narrow.repetition_penalty = 1.3;
  const std::vector<SamplingOptions> own = {SamplingOptions{}, hot, narrow};

  const GreedyOptions limits{.max_new_tokens = 12, .stop_ids = {}};
  const std::vector<Generation> per_row = generate_sampled_batch(llm, prompts, limits, own, seeds);
  const std::vector<Generation> shared = generate_sampled_batch(llm, prompts, limits, {hot}, seeds);
  ASSERT_EQ(per_row.size(), 3u);
  ASSERT_EQ(shared.size(), 3u);
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(per_row[i].tokens, generate_sampled(llm, prompts[i].unsqueeze(0), limits, own[i], seeds[i]).tokens)
        << "row " << i;
    EXPECT_EQ(shared[i].tokens, generate_sampled(llm, prompts[i].unsqueeze(0), limits, hot, seeds[i]).tokens)
        << "row " << i;
    EXPECT_EQ(per_row[i].tokens.size(), 12u);
  }
  EXPECT_NE(per_row[0].tokens, per_row[1].tokens);

  // A stop id ends its own row only; the rows after it still draw as they would alone.
  const GreedyOptions stopping{.max_new_tokens = 12, .stop_ids = {per_row[1].tokens[2]}};
  const std::vector<Generation> stopped = generate_sampled_batch(llm, prompts, stopping, own, seeds);
  for (size_t i = 0; i < prompts.size(); ++i) {
    const Generation alone = generate_sampled(llm, prompts[i].unsqueeze(0), stopping, own[i], seeds[i]);
    EXPECT_EQ(stopped[i].tokens, alone.tokens) << "row " << i;
    EXPECT_EQ(stopped[i].finish, alone.finish) << "row " << i;
  }
  EXPECT_EQ(stopped[1].finish, FinishReason::kStop);
  EXPECT_LE(stopped[1].tokens.size(), 3u);

  EXPECT_THROW(generate_sampled_batch(llm, prompts, limits, own, {1, 2}), c10::Error);
  EXPECT_THROW(generate_sampled_batch(llm, prompts, limits, {hot, hot}, seeds), c10::Error);
}

}  // namespace
}  // namespace cpm::core::serve
