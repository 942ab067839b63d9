// SPDX-License-Identifier: Apache-2.0
#include "serve/generation.h"
#include "serve/static_decode.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/full.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/topk.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <string>

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

// A decode step on the static cache (keys and values preallocated for 256 slots, the slots not
// written yet masked out) gives the growing cache's logits up to rounding: the attention kernel sums
// over 256 keys instead of the 12 seen, in another order, and the error is printed (2e-7 on
// LibTorch 1.13 here).
TEST(KvCache, AStaticCacheStepEqualsAGrowingCacheStep) {
  const model::Qwen2ForCausalLM llm(tiny().params, "llm", tiny().config);
  const at::Tensor ids = *tiny().checkpoint.tensor("golden.input_ids");  // [2, 12]
  const at::Tensor prompt = ids.narrow(1, 0, 11), last = ids.narrow(1, 11, 1);
  const at::Tensor positions = at::arange(11, at::kLong).unsqueeze(0).expand({2, 11});
  model::KvCache growing;
  llm.hidden_states(llm.embed(prompt), positions, &growing);
  model::KvCache fixed;
  for (size_t i = 0; i < growing.keys.size(); ++i) {
    for (auto [from, to] : {std::pair{&growing.keys, &fixed.keys}, std::pair{&growing.values, &fixed.values}}) {
      const at::Tensor& k = (*from)[i];  // [2, Hkv, 11, Dh]
      to->push_back(at::zeros({2, k.size(1), 256, k.size(3)}));
      to->back().narrow(2, 0, 11).copy_(k);
    }
  }
  fixed.write_positions = at::full({1}, 11, at::kLong);
  at::Tensor key_mask = at::zeros({2, 256}, at::kLong);
  key_mask.narrow(1, 0, 12).fill_(1);
  const at::Tensor position = at::full({2, 1}, 11, at::kLong);
  const at::Tensor want = llm.logits(llm.hidden_states(llm.embed(last), position, &growing));
  const at::Tensor got = llm.logits(llm.hidden_states(llm.embed(last), position, &fixed, key_mask));
  const double err = ((got - want).abs().max() / want.abs().max()).item<double>();
  std::cout << "[ kv      ] static vs growing cache, one decode step: max relative logit error " << err << "\n";
  EXPECT_LT(err, 1e-5);
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

// Two correct greedy decoders agree only as far as their argmax is well conditioned. The static
// cache attends over its whole capacity (padding slots masked), the growing cache over the tokens
// so far: the same math, summed in another order by the attention kernel (LibTorch 2.x's CPU flash
// attention sums its softmax in SIMD lanes whose tails depend on the key count), so the logits may
// differ in the last bits and flip a near tie. So `got` must equal `want` token for token until
// they differ, and may differ only where the two tokens are the top two of the exact logits
// (recomputed over prompt + common prefix without a cache) within kNearTie of each other
// (relative to the largest logit); the rest of the row is not comparable and is not compared.
// float32 rounding in this tiny model moves logits by ~1e-7 of their scale; a real error (a wrong
// mask slot, a stale key) moves them by far more than 1e-4.
constexpr double kNearTie = 1e-4;

void expect_same_greedy(const model::Qwen2ForCausalLM& llm, const at::Tensor& prompt, const Generation& want,
                        const Generation& got, const std::string& what) {
  SCOPED_TRACE(what);
  const size_t common = std::min(want.tokens.size(), got.tokens.size());
  size_t i = 0;
  while (i < common && want.tokens[i] == got.tokens[i]) ++i;
  if (i == common) {
    EXPECT_EQ(got.tokens.size(), want.tokens.size());
    EXPECT_EQ(got.finish, want.finish);
    return;
  }
  std::vector<at::Tensor> parts = {prompt};
  if (i > 0) {
    const std::vector<int64_t> prefix(want.tokens.begin(), want.tokens.begin() + static_cast<int64_t>(i));
    parts.push_back(llm.embed(at::tensor(prefix, at::kLong).unsqueeze(0))[0]);
  }
  const at::Tensor embeds = at::cat(parts, 0).unsqueeze(0);
  const at::Tensor positions = at::arange(embeds.size(1), at::kLong).unsqueeze(0);
  const at::Tensor logits = llm.logits(llm.hidden_states(embeds, positions))[0][-1];
  const auto [top, index] = logits.topk(2);
  const double margin = (top[0] - top[1]).item<double>() / logits.abs().max().item<double>();
  const std::set<int64_t> top2 = {index[0].item<int64_t>(), index[1].item<int64_t>()};
  std::cout << "[ greedy  ] " << what << ": differs at step " << i << " (" << want.tokens[i] << " vs "
            << got.tokens[i] << "), top-2 margin " << margin << " of the largest logit\n";
  EXPECT_TRUE(margin < kNearTie && top2.count(want.tokens[i]) && top2.count(got.tokens[i]))
      << "step " << i << ": not a near tie of the top two (margin " << margin << ")";
}

// The static-cache decoder (the CUDA-graph path's step, run eagerly here) gives the same tokens and
// finish reasons as the growing cache, with and without stops.
TEST(GenerateGreedyBatchStatic, EqualsTheGrowingCache) {
  const model::Qwen2ForCausalLM llm(tiny().params, "llm", tiny().config);
  const at::Tensor ids = *tiny().checkpoint.tensor("golden.input_ids");  // [2, 12]
  const std::vector<at::Tensor> prompt_ids = {ids[0], ids[1].narrow(0, 0, 5), ids[1].narrow(0, 3, 9)};
  std::vector<at::Tensor> prompts;
  for (const at::Tensor& p : prompt_ids) prompts.push_back(llm.embed(p.unsqueeze(0))[0]);
  const auto expect_same = [&](const std::vector<Generation>& dynamic, const std::vector<Generation>& fixed) {
    for (size_t i = 0; i < prompts.size(); ++i) {
      expect_same_greedy(llm, prompts[i], dynamic[i], fixed[i], "prompt " + std::to_string(i));
    }
  };
  DecodeGraphCache graphs;
  for (const GreedyOptions& limits : {GreedyOptions{.max_new_tokens = 12, .stop_ids = {}},
                                      GreedyOptions{.max_new_tokens = 1, .stop_ids = {}}}) {
    expect_same(generate_greedy_batch(llm, prompts, limits), generate_greedy_batch_static(llm, prompts, limits, graphs));
  }
  const std::vector<Generation> plain = generate_greedy_batch(llm, prompts, {.max_new_tokens = 12, .stop_ids = {}});
  const GreedyOptions stops{.max_new_tokens = 12, .stop_ids = {plain[0].tokens[3], plain[2].tokens[0]}};
  const std::vector<Generation> fixed = generate_greedy_batch_static(llm, prompts, stops, graphs);
  expect_same(generate_greedy_batch(llm, prompts, stops), fixed);
  EXPECT_EQ(fixed[2].finish, FinishReason::kStop);
}

// The comparison above is not loose: a decoder that picks the runner-up where it is not within a
// near tie, or a row that ends early, fails it.
TEST(GenerateGreedyBatchStatic, TheComparisonCatchesAWrongToken) {
  const model::Qwen2ForCausalLM llm(tiny().params, "llm", tiny().config);
  const at::Tensor ids = tiny().checkpoint.tensor("golden.input_ids")->narrow(0, 0, 1);  // [1, 12]
  const at::Tensor prompt = llm.embed(ids)[0];
  const Generation want = generate_greedy(llm, prompt.unsqueeze(0), {.max_new_tokens = 6, .stop_ids = {}});
  Generation wrong = want;
  const at::Tensor logits = llm.logits(llm.hidden_states(prompt.unsqueeze(0), at::arange(12, at::kLong).unsqueeze(0)));
  wrong.tokens[0] = static_cast<int32_t>(std::get<1>(logits[0][-1].topk(2))[1].item<int64_t>());
  EXPECT_NONFATAL_FAILURE(expect_same_greedy(llm, prompt, want, wrong, "the runner-up"), "not a near tie");
  Generation shorter = want;
  shorter.tokens.pop_back();
  EXPECT_NONFATAL_FAILURE(expect_same_greedy(llm, prompt, want, shorter, "a short row"), "Expected equality");
}

// Decoders are kept per (model, batch bucket, length bucket): a request of the same shapes reuses
// one, and its buffers, still holding the last request's keys, give the same tokens again; a
// copy of the model shares its decoders, another model has its own, which go once it is gone; the
// least recently used go first past the limit. Graphs are captured on CUDA only.
TEST(DecodeGraphCache, KeepsDecodersAcrossRequestsPerModelAndBucket) {
  const model::Qwen2ForCausalLM llm(tiny().params, "llm", tiny().config);
  const at::Tensor ids = *tiny().checkpoint.tensor("golden.input_ids");  // [2, 12]
  std::vector<at::Tensor> three;  // padded to a batch of 4
  for (const at::Tensor& p : {ids[0], ids[1].narrow(0, 0, 5), ids[1].narrow(0, 3, 9)}) {
    three.push_back(llm.embed(p.unsqueeze(0))[0]);
  }
  const GreedyOptions limits{.max_new_tokens = 8, .stop_ids = {}};
  DecodeGraphCache graphs(3);
  const std::vector<Generation> first = generate_greedy_batch_static(llm, three, limits, graphs);
  EXPECT_EQ(graphs.entries(), 1u);
  const std::vector<Generation> second = generate_greedy_batch_static(llm, {three[1], three[0]}, limits, graphs);
  EXPECT_EQ(graphs.entries(), 2u);  // batch bucket 2
  const model::Qwen2ForCausalLM copy = llm;
  const std::vector<Generation> again = generate_greedy_batch_static(copy, three, limits, graphs);
  EXPECT_EQ(graphs.entries(), 2u);
  for (size_t i = 0; i < three.size(); ++i) EXPECT_EQ(again[i].tokens, first[i].tokens) << "prompt " << i;
  // Another batch size: other matrix shapes, so equal up to near ties.
  expect_same_greedy(llm, three[1], first[1], second[0], "prompt 1 in a batch of 2");
  expect_same_greedy(llm, three[0], first[0], second[1], "prompt 0 in a batch of 2");
  {
    const model::Qwen2ForCausalLM other(tiny().params, "llm", tiny().config);
    generate_greedy_batch_static(other, three, limits, graphs);
    EXPECT_EQ(graphs.entries(), 3u);
    generate_greedy_batch_static(other, {three[0]}, limits, graphs);  // the least recent goes
    EXPECT_EQ(graphs.entries(), 3u);
    // A longer generation needs another length bucket.
    generate_greedy_batch_static(llm, three, {.max_new_tokens = 300, .stop_ids = {}}, graphs);
    EXPECT_EQ(graphs.entries(), 3u);
  }
  generate_greedy_batch_static(llm, three, limits, graphs);  // `other`'s decoders are dropped
  EXPECT_EQ(graphs.entries(), 2u);
  EXPECT_EQ(graphs.graphs(), 0u);  // on the CPU
  graphs.clear();
  EXPECT_EQ(graphs.entries(), 0u);
}

TEST(DecodeGraphCache, Buckets) {
  std::vector<int64_t> batches;
  for (const int64_t rows : {1, 2, 3, 5, 8, 9, 16, 17, 32, 33}) batches.push_back(DecodeGraphCache::batch_bucket(rows));
  EXPECT_EQ(batches, (std::vector<int64_t>{1, 2, 4, 8, 8, 16, 16, 32, 32, 48}));
  EXPECT_EQ(DecodeGraphCache::length_bucket(1), 256);
  EXPECT_EQ(DecodeGraphCache::length_bucket(157), 256);
  EXPECT_EQ(DecodeGraphCache::length_bucket(256), 256);
  EXPECT_EQ(DecodeGraphCache::length_bucket(257), 512);
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
    // The growing cache is the same decoder as `plain`; the static one agrees up to near ties.
    const auto expect_same = [&](size_t row, const Generation& want, const std::string& what) {
      if (fixed) return expect_same_greedy(llm, prompts[row], want, out[row], what);
      EXPECT_EQ(out[row].tokens, want.tokens) << what;
      EXPECT_EQ(out[row].finish, want.finish) << what;
    };
    expect_same(0, plain[0], "row 0");
    EXPECT_EQ(streamed[0], out[0].tokens);
    const Generation cut{{plain[1].tokens.begin(), plain[1].tokens.begin() + 3}, FinishReason::kLength};
    expect_same(1, cut, "row 1, cancelled after 3 tokens");
    EXPECT_EQ(out[1].tokens.size(), 3u);
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
