// SPDX-License-Identifier: Apache-2.0
//
// The engine's parts that need no model: option resolution, the adapter registry's eviction
// choice, the cancellation token, the worker pool and the streamed text.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <string>

#include "io/tokenizer.h"
#include "runtime/adapter_registry.h"
#include "runtime/cancellation.h"
#include "runtime/decoding.h"
#include "runtime/text_stream.h"
#include "runtime/worker_pool.h"
#include "serve/answer_text.h"

namespace cpm::core::runtime {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

TEST(ResolveDecoding, GreedyByDefaultWithTheModelsMaxNewTokens) {
  io::GenerationConfig defaults;
  defaults.max_new_tokens = 77;
  auto r = resolve_decoding({}, defaults, {});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->kind, DecodeKind::kGreedy);
  EXPECT_EQ(r->max_new_tokens, 77);
  EXPECT_EQ(resolve_decoding({}, {}, {})->max_new_tokens, 2048);
}

TEST(ResolveDecoding, GreedyWithARepetitionPenaltyRunsAsTopOneSampling) {
  DecodingOptions o;
  o.repetition_penalty = 1.3;
  auto r = resolve_decoding(o, {}, {});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->kind, DecodeKind::kSampled);
  EXPECT_EQ(r->sampling.top_k, 1);
  EXPECT_EQ(r->sampling.temperature, 1.0);
  EXPECT_EQ(r->sampling.top_p, 1.0);
  EXPECT_EQ(r->sampling.repetition_penalty, 1.3);
}

TEST(ResolveDecoding, SamplingTakesTheRequestThenTheGenerationConfigThenChatDefaults) {
  io::GenerationConfig defaults;
  defaults.top_k = 50;
  DecodingOptions o;
  o.strategy = DecodingStrategy::kSampling;
  o.temperature = 0.3;
  o.seed = 9;
  auto r = resolve_decoding(o, defaults, {});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->kind, DecodeKind::kSampled);
  EXPECT_EQ(r->sampling.temperature, 0.3);
  EXPECT_EQ(r->sampling.top_k, 50);
  EXPECT_EQ(r->sampling.top_p, 0.8);
  EXPECT_EQ(r->sampling.repetition_penalty, 1.05);
  EXPECT_EQ(r->seed, 9u);
}

TEST(ResolveDecoding, BeamDefaultsToChatsThreeBeams) {
  DecodingOptions o;
  o.strategy = DecodingStrategy::kBeam;
  auto r = resolve_decoding(o, {}, {});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->kind, DecodeKind::kBeam);
  EXPECT_EQ(r->beam.num_beams, 3);
  EXPECT_EQ(r->beam.repetition_penalty, 1.2);
}

TEST(ResolveDecoding, BadOrUnusedFieldsAreInvalidArgumentNamingTheField) {
  auto expect_invalid = [](DecodingOptions o, const std::string& field) {
    auto r = resolve_decoding(o, {}, {});
    ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(field));
  };
  DecodingOptions o;
  o.temperature = 0.5;  // greedy does not sample
  expect_invalid(o, "temperature");
  o = {};
  o.num_beams = 2;
  expect_invalid(o, "num_beams");
  o = {};
  o.max_new_tokens = 0;
  expect_invalid(o, "max_new_tokens");
  o.max_new_tokens = 5000;  // above the default limit of 4096
  expect_invalid(o, "max_new_tokens");
  o = {};
  o.strategy = DecodingStrategy::kSampling;
  o.top_p = 0;
  expect_invalid(o, "top_p");
  o = {};
  o.strategy = DecodingStrategy::kBeam;
  o.num_beams = 9;
  expect_invalid(o, "num_beams");
  o = {};
  o.repetition_penalty = 0;
  expect_invalid(o, "repetition_penalty");
}

TEST(AdapterName, OneToSixtyFourSafeCharacters) {
  EXPECT_TRUE(check_adapter_name("job-12_v1.final").ok());
  EXPECT_EQ(check_adapter_name("").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(check_adapter_name("../etc").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(check_adapter_name(std::string(65, 'a')).code(), absl::StatusCode::kInvalidArgument);
}

// Three loaded adapters of 100 bytes each, used in the order a, b, c.
AdapterRegistry three_loaded(int64_t budget) {
  AdapterRegistry r(budget);
  for (const char* name : {"a", "b", "c"}) {
    AdapterInfo& info = r.add(name, std::string("/adapters/") + name);
    info.state = AdapterState::kLoaded;
    info.device_bytes = 100;
    r.mark_loaded(name);
  }
  return r;
}

const auto kIdle = [](const std::string&) { return false; };

TEST(AdapterRegistry, EvictsLeastRecentlyUsedFirstAndOnlyWhatIsNeeded) {
  AdapterRegistry r = three_loaded(350);
  EXPECT_EQ(r.device_bytes_used(), 300);
  EXPECT_THAT(*r.plan_eviction("d", 50, kIdle), IsEmpty());
  EXPECT_THAT(*r.plan_eviction("d", 100, kIdle), ElementsAre("a"));
  r.touch("a", 3);
  EXPECT_EQ(r.find("a")->requests_served, 3);
  EXPECT_THAT(*r.plan_eviction("d", 100, kIdle), ElementsAre("b"));
  EXPECT_THAT(*r.plan_eviction("d", 300, kIdle), ElementsAre("b", "c", "a"));
}

TEST(AdapterRegistry, PinnedAndBusyAdaptersStayAndTheReplacedVersionDoesNotCount) {
  AdapterRegistry r = three_loaded(300);
  r.find("a")->pinned = true;
  EXPECT_THAT(*r.plan_eviction("d", 100, [](const std::string& n) { return n == "b"; }),
              ElementsAre("c"));
  // Replacing b's 100 bytes with 150: only 50 more are needed, and b itself is not a candidate.
  EXPECT_THAT(*r.plan_eviction("b", 150, kIdle), ElementsAre("c"));
  auto none = r.plan_eviction("d", 250, [](const std::string& n) { return n == "b"; });
  ASSERT_EQ(none.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(none.status().message()), HasSubstr("adapter d needs 250 device bytes"));
}

TEST(AdapterRegistry, NoBudgetMeansNoEviction) {
  AdapterRegistry r = three_loaded(0);
  EXPECT_THAT(*r.plan_eviction("d", int64_t{1} << 40, kIdle), IsEmpty());
}

TEST(CancellationToken, TheHookRunsOnceOnCancelOrAtOnceWhenAlreadyCancelled) {
  CancellationToken token;
  int calls = 0;
  token.on_cancel([&] { ++calls; });
  EXPECT_FALSE(token.cancelled());
  token.cancel();
  token.cancel();
  EXPECT_TRUE(token.cancelled());
  EXPECT_EQ(calls, 1);
  token.on_cancel([&] { calls += 10; });
  EXPECT_EQ(calls, 11);
}

TEST(WorkerPool, RunsEveryPostedTaskBeforeItGoes) {
  std::atomic<int> done{0};
  {
    WorkerPool pool(2);
    for (int i = 0; i < 100; ++i) pool.post([&] { ++done; });
  }
  EXPECT_EQ(done.load(), 100);
}

TEST(TextStreamer, DeltasConcatenateToTheAnswerTextAndHoldBackSplitCharacters) {
  auto tokenizer = io::load_tokenizer(CPM_QWEN_TOKENIZER_DIR);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  // A formula, a character that byte-level BPE splits over several tokens, id 0 (dropped), and the
  // stop token that ended decoding.
  auto ids = (*tokenizer)->encode("x^{2} 𝔄 \\frac{a}{b}");
  ASSERT_TRUE(ids.ok());
  serve::Generation g;
  g.tokens = *ids;
  g.tokens.insert(g.tokens.begin() + 2, 0);
  g.tokens.push_back(*(*tokenizer)->token_to_id("<|im_end|>"));
  g.finish = serve::FinishReason::kStop;

  TextStreamer streamer(**tokenizer);
  std::string joined;
  int held = 0;
  for (size_t i = 0; i < g.tokens.size(); ++i) {
    auto d = streamer.push(g.tokens[i], i + 1 == g.tokens.size());
    ASSERT_TRUE(d.ok()) << d.status();
    EXPECT_THAT(d->token_ids, ElementsAre(g.tokens[i]));
    EXPECT_EQ(d->text.find("\xEF\xBF\xBD"), std::string::npos) << "a broken character was sent";
    held += d->text.empty() ? 1 : 0;
    joined += d->text;
  }
  joined += streamer.finish()->text;
  EXPECT_EQ(joined, *serve::answer_text(**tokenizer, g));
  EXPECT_GE(held, 3);  // id 0, the stop token, and at least one piece of the split character
}

}  // namespace
}  // namespace cpm::core::runtime
