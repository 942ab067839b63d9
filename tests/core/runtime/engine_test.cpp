// SPDX-License-Identifier: Apache-2.0
//
// The engine on the tiny random checkpoint (real tokenizer, real architecture at toy size) with
// real formula images. Requests are held in the queue deterministically by a background step that
// blocks (Gate), never by timing.
#include "runtime/engine.h"

#include <ATen/ops/tensor.h>
#include <c10/util/Exception.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <latch>
#include <thread>

#include "core/runtime/engine_test_util.h"
#include "io/peft_adapter.h"
#include "model/adapter.h"
#include "runtime/ocr_input.h"
#include "serve/answer_text.h"
#include "serve/generation.h"
#include "test_util.h"
#include "train/dataset.h"

namespace cpm::core::runtime {
namespace {

using namespace std::chrono_literals;
using testing::eventually;
using testing::Gate;
using ::testing::HasSubstr;
using Result = absl::StatusOr<OcrResult>;

constexpr int kMaxNewTokens = 6;

bool is_ready(std::future<Result>& f) { return f.wait_for(0s) == std::future_status::ready; }

class EngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    testing::write_tiny_checkpoint(dir_->file("tiny"));
    base_ = testing::load_tiny(dir_->file("tiny")).release();
    images_ = new std::vector<std::string>(testing::formula_images(8));
  }
  static void TearDownTestSuite() {
    delete images_;
    delete base_;
    delete dir_;
  }

  static std::unique_ptr<Engine> start(EngineOptions options = {}) {
    auto engine =
        std::make_unique<Engine>(testing::load_tiny(dir_->file("tiny")), std::move(options));
    EXPECT_TRUE(engine->start().ok());
    return engine;
  }

  static OcrRequest request(size_t image, int max_new_tokens = kMaxNewTokens) {
    OcrRequest r;
    r.image = images_->at(image);
    r.decoding.max_new_tokens = max_new_tokens;
    return r;
  }

  std::string write_adapter(const std::string& name, uint64_t seed, bool corrupt = false,
                            const std::vector<std::string>& modules_to_save = {}) const {
    return testing::write_test_adapter(*base_, tmp_.file(name), seed, corrupt, modules_to_save);
  }

  // One image decoded greedily alone, as cpm-tool generate does it: the engine's reference.
  static std::string direct_answer(const model::MiniCPMO& m, size_t image,
                                   int max_new_tokens = kMaxNewTokens) {
    const PromptContext context{*base_->tokenizer, base_->chat_template,
                                base_->configs.preprocessor};
    auto input = prepare_ocr_input(context, images_->at(image),
                                   std::string(train::kDefaultCsvPrompt), std::nullopt, {});
    EXPECT_TRUE(input.ok()) << input.status();
    const at::Tensor features = m.encode_images(input->image.pixel_values, input->image.tgt_sizes);
    const std::vector<int64_t> ids(input->prompt.input_ids.begin(), input->prompt.input_ids.end());
    const at::Tensor embeds =
        m.prompt_embeddings(at::tensor(ids), input->prompt.image_bound, features);
    serve::GreedyOptions options;
    options.max_new_tokens = max_new_tokens;
    options.stop_ids = {151645, 151643};  // <|im_end|>, <|endoftext|>
    return *serve::answer_text(*base_->tokenizer, serve::generate_greedy(m.llm(), embeds, options));
  }
  static std::string direct_answer(size_t image) { return direct_answer(*base_->model, image); }
  static std::string direct_answer_with(const std::string& adapter_dir, size_t image) {
    auto peft = io::read_peft_adapter(adapter_dir);
    auto params = model::apply_adapter(base_->params, base_->configs.model, *peft);
    const model::MiniCPMO m(*params, base_->configs.model, model::run_options(peft->config, false));
    return direct_answer(m, image);
  }

  static testing::TempDir* dir_;  // the checkpoint
  static model::LoadedModel* base_;
  static std::vector<std::string>* images_;
  testing::TempDir tmp_;  // this test's adapters
};
testing::TempDir* EngineTest::dir_ = nullptr;
model::LoadedModel* EngineTest::base_ = nullptr;
std::vector<std::string>* EngineTest::images_ = nullptr;

// The row count of every generation call an engine makes (through its before_generation seam).
class GenerationCalls {
 public:
  EngineOptions options() {
    EngineOptions o;
    o.before_generation = [this](int rows) {
      std::lock_guard<std::mutex> lock(mu_);
      rows_.push_back(rows);
    };
    return o;
  }
  std::vector<int> rows() {
    std::lock_guard<std::mutex> lock(mu_);
    return rows_;
  }

 private:
  std::mutex mu_;
  std::vector<int> rows_;
};

TEST_F(EngineTest, ABatchEqualsEachRequestRunAlone) {
  // Alone: one request per cycle; different max_new_tokens, so the batch below cuts rows.
  EngineOptions one;
  one.max_batch_size = 1;
  auto alone = start(one);
  std::vector<Result> expected;
  for (size_t i = 0; i < 8; ++i) {
    expected.push_back(alone->submit(request(i, i % 2 ? 3 : kMaxNewTokens)).get());
    ASSERT_TRUE(expected.back().ok()) << expected.back().status();
    EXPECT_EQ(expected.back()->batch_size, 1);
  }
  EXPECT_EQ(expected[0]->text, direct_answer(0));
  EXPECT_EQ(expected[0]->generated_tokens, kMaxNewTokens);
  EXPECT_GT(expected[0]->prompt_tokens, 64);
  EXPECT_GE(expected[0]->num_image_slices, 1);

  // Together: all eight queue up while the engine is held, then run as one batch.
  auto engine = start();
  std::vector<std::future<Result>> together;
  {
    Gate gate(*engine);
    for (size_t i = 0; i < 8; ++i)
      together.push_back(engine->submit(request(i, i % 2 ? 3 : kMaxNewTokens)));
    ASSERT_TRUE(eventually([&] { return engine->stats().queued == 8; }));
  }
  for (size_t i = 0; i < 8; ++i) {
    const Result r = together[i].get();
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->batch_size, 8);
    EXPECT_EQ(r->text, expected[i]->text) << "image " << i;
    EXPECT_EQ(r->generated_tokens, expected[i]->generated_tokens) << "image " << i;
    EXPECT_EQ(r->finish, expected[i]->finish) << "image " << i;
    EXPECT_EQ(r->prompt_tokens, expected[i]->prompt_tokens);
    EXPECT_GT(r->timings.total, r->timings.decode);
  }
  const EngineStats s = engine->stats();
  EXPECT_EQ(s.batches, 1);
  EXPECT_EQ(s.batched_requests, 8);
}

TEST_F(EngineTest, SampledGreedyWithPenaltyAndBeamRequestsInOneCycleEqualThemAlone) {
  std::vector<OcrRequest> requests;
  for (uint64_t seed : {11, 12}) {
    OcrRequest r = request(requests.size());
    r.decoding.strategy = DecodingStrategy::kSampling;
    r.decoding.seed = seed;
    r.decoding.temperature = 1.5;  // flat enough that the seeds matter
    requests.push_back(r);
  }
  OcrRequest penalised = request(2);
  penalised.decoding.repetition_penalty = 1.3;
  requests.push_back(penalised);
  for (int beams : {2, 3}) {
    OcrRequest r = request(requests.size());
    r.decoding.strategy = DecodingStrategy::kBeam;
    r.decoding.num_beams = beams;
    requests.push_back(r);
  }
  requests.push_back(request(5));

  EngineOptions one;
  one.max_batch_size = 1;
  auto alone = start(one);
  std::vector<Result> expected;
  for (const OcrRequest& r : requests) {
    expected.push_back(alone->submit(r).get());
    ASSERT_TRUE(expected.back().ok()) << expected.back().status();
  }
  auto engine = start();
  std::vector<std::future<Result>> together;
  {
    Gate gate(*engine);
    for (const OcrRequest& r : requests) together.push_back(engine->submit(r));
    ASSERT_TRUE(eventually(
        [&] { return engine->stats().queued == static_cast<int64_t>(requests.size()); }));
  }
  const std::vector<int> batch_sizes = {
      3, 3, 3, 1, 1, 1};  // sampled (with the penalised greedy), beams, greedy
  for (size_t i = 0; i < requests.size(); ++i) {
    const Result r = together[i].get();
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->text, expected[i]->text) << "request " << i;
    EXPECT_EQ(r->batch_size, batch_sizes[i]) << "request " << i;
  }
  // Groups: sampled (with the penalised greedy), beam (decoded one request at a time), greedy.
  EXPECT_EQ(engine->stats().batches, 3);
}

TEST_F(EngineTest, BeyondTheQueueLimitIsResourceExhaustedAtOnce) {
  EngineOptions o;
  o.max_queue = 3;
  auto engine = start(o);
  std::vector<std::future<Result>> admitted;
  Gate gate(*engine);
  for (size_t i = 0; i < 3; ++i) admitted.push_back(engine->submit(request(i)));
  bool answered = false;
  absl::Status status;
  engine->submit(request(3), [&](Result r) {
    answered = true;
    status = r.status();
  });
  EXPECT_TRUE(answered) << "the refusal must come before submit returns";
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(status.message()), HasSubstr("queue full"));
  gate.release();
  for (auto& f : admitted) EXPECT_TRUE(f.get().ok());
  EXPECT_EQ((engine->stats().requests[{"", absl::StatusCode::kResourceExhausted}]), 1);
}

TEST_F(EngineTest, CancelledAndExpiredRequestsFreeTheirSlotAndNeverRun) {
  EngineOptions o;
  o.max_queue = 2;
  auto engine = start(o);
  OcrRequest late = request(0);
  late.deadline = Clock::now() - 1ms;
  EXPECT_EQ(engine->submit(late).get().status().code(), absl::StatusCode::kDeadlineExceeded);

  Gate gate(*engine);
  auto token = std::make_shared<CancellationToken>();
  OcrRequest cancelled = request(0);
  cancelled.cancellation = token;
  std::future<Result> f1 = engine->submit(cancelled);
  OcrRequest expiring = request(1);
  const auto deadline = Clock::now() + 100ms;
  expiring.deadline = deadline;
  std::future<Result> f2 = engine->submit(expiring);
  ASSERT_TRUE(eventually([&] { return engine->stats().queued == 2; }));

  token->cancel();  // the engine is still held: the cancelling thread answers
  ASSERT_TRUE(is_ready(f1));
  EXPECT_EQ(f1.get().status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(engine->stats().queued, 1);
  std::future<Result> f3 = engine->submit(request(2));  // the freed slot takes another request

  std::this_thread::sleep_until(deadline + 10ms);
  gate.release();
  const Result r2 = f2.get();
  EXPECT_EQ(r2.status().code(), absl::StatusCode::kDeadlineExceeded) << r2.status();
  EXPECT_TRUE(f3.get().ok());
  EXPECT_EQ(engine->stats().batched_requests, 1) << "only the third request ran";
}

TEST_F(EngineTest, BadInputIsInvalidArgumentAndTheEngineKeepsServing) {
  auto engine = start();
  const std::string png = images_->at(0);
  std::string corrupt = png;
  for (size_t i = 100; i < corrupt.size() && i < 400; ++i)
    corrupt[i] = static_cast<char>(corrupt[i] ^ 0x5a);
  for (const std::string& image :
       {std::string(), png.substr(0, 120), std::string("not an image at all"), corrupt}) {
    OcrRequest r = request(0);
    r.image = image;
    const Result result = engine->submit(r).get();
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << result.status();
    EXPECT_THAT(std::string(result.status().message()), HasSubstr("image: "));
  }
  OcrRequest slices = request(0);
  slices.max_slice_nums = 0;
  EXPECT_THAT(std::string(engine->submit(slices).get().status().message()),
              HasSubstr("max_slice_nums"));
  OcrRequest options = request(0);
  options.decoding.top_k = 5;  // greedy
  EXPECT_EQ(engine->submit(options).get().status().code(), absl::StatusCode::kInvalidArgument);

  const Result ok = engine->submit(request(0)).get();
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->text, direct_answer(0));
}

TEST_F(EngineTest, UnknownAdaptersAreNotFound) {
  auto engine = start();
  OcrRequest r = request(0);
  r.adapter = "nope";
  const Result result = engine->submit(r).get();
  EXPECT_EQ(result.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("nope"));
  r.adapter = "../nope";
  EXPECT_EQ(engine->submit(r).get().status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine->load_adapter("nope", "", false).get().status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(engine->unload_adapter("nope").get().status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(engine->adapter("nope").status().code(), absl::StatusCode::kNotFound);
  const auto missing = engine->load_adapter("x", dir_->file("missing"), false).get();
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("missing/adapter_config.json"));
}

TEST_F(EngineTest, AdaptersLoadReplaceKeepTheOldOnErrorUnloadAndReloadOnDemand) {
  const std::string a = write_adapter("adapter-a", 1), b = write_adapter("adapter-b", 2);
  const std::string bad = write_adapter("adapter-bad", 3, /*corrupt=*/true);
  auto engine = start();
  OcrRequest with = request(0);
  with.adapter = "x";
  const std::string base_text = engine->submit(request(0)).get()->text;

  auto loaded = engine->load_adapter("x", a, false).get();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->state, AdapterState::kLoaded);
  EXPECT_EQ(loaded->path, a);
  EXPECT_EQ(loaded->r, 4);
  EXPECT_EQ(loaded->lora_alpha, 8);
  EXPECT_EQ(loaded->target_modules.size(), 8u);  // 4 projections x 2 layers
  EXPECT_EQ(loaded->device_bytes, 4 * testing::kTestAdapterLoraElements);  // float32 model
  EXPECT_GT(loaded->size_bytes, 0);
  const Result with_a = engine->submit(with).get();
  ASSERT_TRUE(with_a.ok()) << with_a.status();
  EXPECT_EQ(with_a->adapter, "x");
  EXPECT_NE(with_a->text, base_text);
  EXPECT_EQ(with_a->text, direct_answer_with(a, 0));

  // Replaced by another folder.
  ASSERT_TRUE(engine->load_adapter("x", b, false).get().ok());
  const std::string b_text = direct_answer_with(b, 0);
  EXPECT_NE(b_text, with_a->text);
  EXPECT_EQ(engine->submit(with).get()->text, b_text);

  // A corrupt folder: rejected naming the tensor; the loaded version keeps serving.
  const auto failed = engine->load_adapter("x", bad, false).get();
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kInvalidArgument) << failed.status();
  EXPECT_THAT(std::string(failed.status().message()), HasSubstr("lora_A"));
  auto info = engine->adapter("x");
  EXPECT_EQ(info->state, AdapterState::kLoaded);
  EXPECT_EQ(info->path, b);
  EXPECT_THAT(info->error, HasSubstr("lora_A"));
  EXPECT_EQ(engine->submit(with).get()->text, b_text);

  // Unloaded: registered, off the device; the next request loads it again.
  auto unloaded = engine->unload_adapter("x").get();
  ASSERT_TRUE(unloaded.ok()) << unloaded.status();
  EXPECT_EQ(unloaded->state, AdapterState::kRegistered);
  EXPECT_EQ(unloaded->device_bytes, 0);
  EXPECT_EQ(engine->stats().adapters_loaded, 0);
  EXPECT_EQ(engine->submit(with).get()->text, b_text);
  EXPECT_EQ(engine->adapter("x")->state, AdapterState::kLoaded);
  EXPECT_EQ(engine->adapter("x")->requests_served, 4);
  const EngineStats s = engine->stats();
  EXPECT_EQ(s.adapter_loads, 3);
  EXPECT_EQ(s.adapter_load_failures, 1);
  EXPECT_EQ(engine->submit(request(0)).get()->text, base_text) << "the base model is untouched";
}

// Requests for the base and two adapters (one with its own embeddings and resampler, as the
// recipe's modules_to_save) run as one forward pass per decoding kind, and each answer equals the
// request's own model run alone.
TEST_F(EngineTest, RequestsForDifferentAdaptersShareOneForwardPassAndEqualThemAlone) {
  const std::string a = write_adapter("adapter-a", 1);
  const std::string b = write_adapter("adapter-b", 2, false, {"embed_tokens", "resampler"});
  std::vector<OcrRequest> requests;
  for (const auto& [image, adapter] : std::vector<std::pair<size_t, std::string>>{
           {0, ""}, {0, "a"}, {0, "b"}, {1, "a"}, {1, ""}, {1, "b"}}) {
    requests.push_back(request(image));
    requests.back().adapter = adapter;
  }
  for (const std::string adapter : {"a", "b"}) {
    OcrRequest r = request(2);
    r.adapter = adapter;
    r.decoding.strategy = DecodingStrategy::kSampling;
    r.decoding.seed = 5;
    r.decoding.temperature = 1.5;
    requests.push_back(r);
  }

  EngineOptions one;
  one.max_batch_size = 1;
  auto alone = start(one);
  GenerationCalls calls;
  auto engine = start(calls.options());
  for (Engine* e : {alone.get(), engine.get()}) {
    ASSERT_TRUE(e->load_adapter("a", a, false).get().ok());
    ASSERT_TRUE(e->load_adapter("b", b, false).get().ok());
  }
  std::vector<Result> expected;
  for (const OcrRequest& r : requests) {
    expected.push_back(alone->submit(r).get());
    ASSERT_TRUE(expected.back().ok()) << expected.back().status();
  }
  // The adapters change the answers, and the reference agrees with the engine alone.
  EXPECT_EQ(expected[0]->text, direct_answer(0));
  EXPECT_EQ(expected[1]->text, direct_answer_with(a, 0));
  EXPECT_EQ(expected[2]->text, direct_answer_with(b, 0));
  EXPECT_NE(expected[1]->text, expected[0]->text);
  EXPECT_NE(expected[2]->text, expected[0]->text);
  EXPECT_NE(expected[2]->text, expected[1]->text);
  EXPECT_NE(expected[6]->text, expected[7]->text);

  std::vector<std::future<Result>> together;
  {
    Gate gate(*engine);
    for (const OcrRequest& r : requests) together.push_back(engine->submit(r));
    ASSERT_TRUE(eventually([&] { return engine->stats().queued == static_cast<int64_t>(requests.size()); }));
  }
  for (size_t i = 0; i < requests.size(); ++i) {
    const Result r = together[i].get();
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->text, expected[i]->text) << "request " << i;
    EXPECT_EQ(r->generated_tokens, expected[i]->generated_tokens) << "request " << i;
    EXPECT_EQ(r->adapter, requests[i].adapter);
    EXPECT_EQ(r->batch_size, i < 6 ? 6 : 2) << "request " << i;
  }
  EXPECT_EQ(calls.rows(), (std::vector<int>{6, 2})) << "one generation per decoding kind";
  EXPECT_EQ(engine->stats().batches, 2);
  EXPECT_EQ(engine->adapter("a")->requests_served, 3);
  EXPECT_EQ(engine->adapter("b")->requests_served, 3);

  // Unloading one adapter leaves the mixed batches of the others right.
  ASSERT_TRUE(engine->unload_adapter("b").get().ok());
  ASSERT_TRUE(engine->adapter("b").ok());
  std::vector<std::future<Result>> again;
  {
    Gate gate(*engine);
    for (const size_t i : {0, 1, 3, 4}) again.push_back(engine->submit(requests[i]));
    ASSERT_TRUE(eventually([&] { return engine->stats().queued == 4; }));
  }
  size_t k = 0;
  for (const size_t i : {0, 1, 3, 4}) EXPECT_EQ(again[k++].get()->text, expected[i]->text) << "request " << i;
}

// An adapter with its own decoder norm cannot share the others' pass: its rows decode on their own,
// the mixable ones together, whichever comes first in the batch.
TEST_F(EngineTest, AnAdapterThatCannotBeMixedRunsInAPassOfItsOwn) {
  const std::string a = write_adapter("adapter-a", 1);
  const std::string own_norm = write_adapter("adapter-n", 3, false, {"norm"});
  std::vector<OcrRequest> requests;
  for (const auto& [image, adapter] : std::vector<std::pair<size_t, std::string>>{
           {0, "0-own-norm"}, {1, "a"}, {2, "0-own-norm"}, {3, "b"}}) {
    requests.push_back(request(image));
    requests.back().adapter = adapter;
  }
  GenerationCalls calls;
  auto engine = start(calls.options());
  ASSERT_TRUE(engine->load_adapter("0-own-norm", own_norm, false).get().ok());
  ASSERT_TRUE(engine->load_adapter("a", a, false).get().ok());
  ASSERT_TRUE(engine->load_adapter("b", write_adapter("adapter-b", 2), false).get().ok());
  std::vector<std::future<Result>> together;
  {
    Gate gate(*engine);
    for (const OcrRequest& r : requests) together.push_back(engine->submit(r));
    ASSERT_TRUE(eventually([&] { return engine->stats().queued == 4; }));
  }
  const std::vector<std::string> expected = {direct_answer_with(own_norm, 0), direct_answer_with(a, 1),
                                             direct_answer_with(own_norm, 2),
                                             direct_answer_with(tmp_.file("adapter-b"), 3)};
  EXPECT_NE(expected[0], direct_answer(0));
  for (size_t i = 0; i < requests.size(); ++i) {
    const Result r = together[i].get();
    ASSERT_TRUE(r.ok()) << "request " << i << ": " << r.status();
    EXPECT_EQ(r->text, expected[i]) << "request " << i;
  }
  EXPECT_EQ(calls.rows(), (std::vector<int>{2, 2})) << "a and b mixed, then the own-norm adapter's two rows";
}

TEST_F(EngineTest, RequestsNamingALoadingAdapterWaitForIt) {
  const std::string a = write_adapter("adapter-a", 1);
  auto engine = start();
  std::future<absl::StatusOr<AdapterInfo>> load;
  std::future<Result> result;
  {
    Gate gate(*engine);  // the files are read off the engine thread; installing waits for the gate
    load = engine->load_adapter("x", a, false);
    EXPECT_EQ(engine->adapter("x")->state, AdapterState::kLoading);
    OcrRequest with = request(1);
    with.adapter = "x";
    result = engine->submit(with);
    ASSERT_TRUE(eventually([&] { return engine->stats().queued == 1; }));
  }
  ASSERT_TRUE(load.get().ok());
  const Result r = result.get();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->text, direct_answer_with(a, 1));
}

TEST_F(EngineTest, TheBudgetEvictsTheLeastRecentlyUsedIdleUnpinnedAdapter) {
  const std::string a = write_adapter("adapter-a", 1), b = write_adapter("adapter-b", 2),
                    c = write_adapter("adapter-c", 4);
  const int64_t one = 4 * testing::kTestAdapterLoraElements;
  EngineOptions o;
  o.adapter_budget_bytes = one * 5 / 2;
  auto engine = start(o);
  ASSERT_TRUE(engine->load_adapter("a", a, false).get().ok());
  ASSERT_TRUE(engine->load_adapter("b", b, false).get().ok());
  OcrRequest with_a = request(0);
  with_a.adapter = "a";
  ASSERT_TRUE(engine->submit(with_a).get().ok());  // a is now used more recently than b
  ASSERT_TRUE(engine->load_adapter("c", c, false).get().ok());
  EXPECT_EQ(engine->adapter("b")->state, AdapterState::kRegistered);
  EXPECT_EQ(engine->adapter("a")->state, AdapterState::kLoaded);
  EXPECT_EQ(engine->stats().adapter_evictions, 1);
  EXPECT_EQ(engine->adapters().device_bytes_used, 2 * one);

  // b comes back pinned, pushing out a (used before c was loaded); c is pinned too.
  ASSERT_TRUE(engine->load_adapter("b", "", true).get().ok());
  EXPECT_EQ(engine->adapter("a")->state, AdapterState::kRegistered);
  auto pinned = engine->load_adapter("c", "", true).get();  // already loaded: only the pin changes
  ASSERT_TRUE(pinned.ok());
  EXPECT_TRUE(pinned->pinned);
  EXPECT_EQ(engine->stats().adapter_loads, 4);

  // Nothing left to evict: a request for a cannot get it loaded.
  const Result r = engine->submit(with_a).get();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("budget"));
  EXPECT_EQ(engine->adapter("a")->state, AdapterState::kFailed);
}

TEST_F(EngineTest, SixteenThreadsSubmittingAtOnceAllGetTheirAnswers) {
  std::vector<std::string> expected;
  for (size_t i = 0; i < 8; ++i) expected.push_back(direct_answer(i));
  EngineOptions o;
  o.max_wait = 20ms;
  auto engine = start(o);
  std::vector<Result> results(16);
  std::latch go(16);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < 16; ++t) {
    threads.emplace_back([&, t] {
      go.arrive_and_wait();
      results[t] = engine->submit(request(t % 8)).get();
    });
  }
  for (std::thread& t : threads) t.join();
  int largest = 0;
  for (size_t t = 0; t < 16; ++t) {
    ASSERT_TRUE(results[t].ok()) << results[t].status();
    EXPECT_EQ(results[t]->text, expected[t % 8]) << "thread " << t;
    largest = std::max(largest, results[t]->batch_size);
  }
  const EngineStats s = engine->stats();
  EXPECT_EQ(s.batched_requests, 16);
  std::printf("16 concurrent requests ran in %lld batches (largest %d)\n",
              static_cast<long long>(s.batches), largest);
}

TEST_F(EngineTest, StopFailsQueuedWorkWithUnavailable) {
  auto engine = start();
  std::vector<std::future<Result>> queued;
  Gate gate(*engine);
  for (size_t i = 0; i < 3; ++i) queued.push_back(engine->submit(request(i)));
  ASSERT_TRUE(eventually([&] { return engine->stats().queued == 3; }));
  std::thread stopper([&] { engine->stop(Engine::StopMode::kFailQueued); });
  ASSERT_TRUE(eventually([&] { return engine->stats().state == EngineState::kStopping; }));
  EXPECT_EQ(engine->submit(request(0)).get().status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(engine->load_adapter("x", dir_->file("x"), false).get().status().code(),
            absl::StatusCode::kUnavailable);
  gate.release();
  stopper.join();
  for (auto& f : queued) EXPECT_EQ(f.get().status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(engine->stats().state, EngineState::kStopped);
  EXPECT_EQ(engine->stats().batches, 0);
}

TEST_F(EngineTest, StopCanDrainQueuedWork) {
  auto engine = start();
  std::vector<std::future<Result>> queued;
  Gate gate(*engine);
  for (size_t i = 0; i < 3; ++i) queued.push_back(engine->submit(request(i)));
  ASSERT_TRUE(eventually([&] { return engine->stats().queued == 3; }));
  std::thread stopper([&] { engine->stop(Engine::StopMode::kDrain); });
  ASSERT_TRUE(eventually([&] { return engine->stats().state == EngineState::kStopping; }));
  EXPECT_EQ(engine->submit(request(0)).get().status().code(), absl::StatusCode::kUnavailable);
  gate.release();
  stopper.join();
  for (size_t i = 0; i < 3; ++i) {
    const Result r = queued[i].get();
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->text, direct_answer(i));
  }
}

// OCR first: queued requests run before the next training step, except that after
// max_ocr_cycles_per_background_step cycles in a row one step runs, so training is not starved.
TEST_F(EngineTest, BackgroundStepsYieldToOcrButAreNotStarved) {
  for (const int fairness : {2, 0}) {
    EngineOptions o;
    o.max_batch_size = 1;
    o.max_ocr_cycles_per_background_step = fairness;
    auto engine = start(o);
    std::atomic<int> answered{0};
    std::vector<int> answered_at_step;  // written on the engine thread, read after it is done
    std::atomic<bool> finished{false};
    {
      Gate gate(*engine);
      for (size_t i = 0; i < 3; ++i)
        engine->submit(request(i), [&](Result r) { answered += r.ok() ? 1 : 0; });
      ASSERT_TRUE(eventually([&] { return engine->stats().queued == 3; }));
      ASSERT_TRUE(engine
                      ->set_background_task([&](const cpm::core::model::LoadedModel&) {
                        answered_at_step.push_back(answered.load());
                        finished = answered_at_step.size() == 4;
                        return !finished;
                      })
                      .ok());
    }
    ASSERT_TRUE(eventually([&] { return finished.load(); }));
    if (fairness == 2) {
      EXPECT_EQ(answered_at_step, (std::vector<int>{2, 3, 3, 3}));
    } else {
      EXPECT_EQ(answered_at_step, (std::vector<int>{3, 3, 3, 3}));
    }
    EXPECT_TRUE(eventually([&] { return !engine->stats().background_task; }));
    EXPECT_EQ(engine->stats().background_steps, 5);  // the gate's and four
  }
}

TEST_F(EngineTest, OcrRequestsCompleteWhileATrainingJobKeepsStepping) {
  auto engine = start();
  std::atomic<int> steps{0};
  ASSERT_TRUE(engine
                  ->set_background_task([&](const cpm::core::model::LoadedModel&) {
                    ++steps;
                    std::this_thread::sleep_for(2ms);  // a step's worth of work
                    return true;
                  })
                  .ok());
  for (size_t i = 0; i < 4; ++i) {
    const int before = steps.load();
    const Result r = engine->submit(request(i)).get();
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->text, direct_answer(i));
    EXPECT_TRUE(eventually([&] { return steps.load() > before; }))
        << "training goes on between requests";
  }
  ASSERT_TRUE(engine->set_background_task(nullptr).ok());
  EXPECT_TRUE(eventually([&] { return !engine->stats().background_task; }));
}

TEST_F(EngineTest, OutOfMemoryFailsOnlyWhatDoesNotFitAndTheEngineKeepsServing) {
  std::atomic<int> fits{1};  // a generation over more rows than this runs out of memory
  EngineOptions o;
  o.before_generation = [&](int rows) {
    TORCH_CHECK_WITH(OutOfMemoryError, rows <= fits.load(),
                     "CUDA out of memory. Tried to allocate 20.00 GiB");
  };
  auto engine = start(o);
  std::vector<std::future<Result>> futures;
  {
    Gate gate(*engine);
    for (size_t i = 0; i < 3; ++i) futures.push_back(engine->submit(request(i)));
    ASSERT_TRUE(eventually([&] { return engine->stats().queued == 3; }));
  }
  for (size_t i = 0; i < 3; ++i) {
    const Result r = futures[i].get();
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->batch_size, 1) << "retried one row at a time";
    EXPECT_EQ(r->text, direct_answer(i));
  }
  fits = 0;
  const Result oom = engine->submit(request(0)).get();
  EXPECT_EQ(oom.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(oom.status().message()), HasSubstr("out of memory"));
  fits = 8;
  EXPECT_TRUE(engine->submit(request(0)).get().ok());
}

TEST_F(EngineTest, StreamedDeltasConcatenateToTheAnswer) {
  auto engine = start();
  std::string streamed;
  int tokens = 0;
  OcrRequest r = request(0, 12);
  r.on_delta = [&](const TextDelta& d) {
    streamed += d.text;
    tokens += static_cast<int>(d.token_ids.size());
  };
  const Result result = engine->submit(r).get();
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(streamed, result->text);
  EXPECT_EQ(tokens, result->generated_tokens);
}

class RecordingObserver : public EngineObserver {
 public:
  void on_request(const RequestEvent& e) override {
    std::lock_guard<std::mutex> lock(mu);
    requests.push_back(e);
  }
  void on_batch(const BatchEvent& e) override {
    std::lock_guard<std::mutex> lock(mu);
    batches.push_back(e);
  }
  void on_adapter(const AdapterEvent& e) override {
    std::lock_guard<std::mutex> lock(mu);
    adapters.push_back(e);
  }
  std::mutex mu;
  std::vector<RequestEvent> requests;
  std::vector<BatchEvent> batches;
  std::vector<AdapterEvent> adapters;
};

TEST_F(EngineTest, MetricsHooksSeeRequestsBatchesAndAdapters) {
  auto observer = std::make_shared<RecordingObserver>();
  EngineOptions o;
  o.observer = observer;
  auto engine = start(o);
  const Result ok = engine->submit(request(0)).get();
  ASSERT_TRUE(ok.ok());
  OcrRequest bad = request(0);
  bad.image = "junk";
  ASSERT_FALSE(engine->submit(bad).get().ok());
  ASSERT_TRUE(engine->load_adapter("x", write_adapter("adapter-a", 1), false).get().ok());
  OcrRequest with = request(1);
  with.adapter = "x";
  ASSERT_TRUE(engine->submit(with).get().ok());

  std::lock_guard<std::mutex> lock(observer->mu);
  ASSERT_EQ(observer->requests.size(), 3u);
  const RequestEvent& first = observer->requests[0];
  EXPECT_EQ(first.code, absl::StatusCode::kOk);
  EXPECT_EQ(first.prompt_tokens, ok->prompt_tokens);
  EXPECT_EQ(first.generated_tokens, ok->generated_tokens);
  EXPECT_GT(first.time_to_first_token.count(), 0);
  EXPECT_GT(first.time_per_output_token.count(), 0);
  EXPECT_EQ(observer->requests[1].code, absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(observer->requests[2].adapter, "x");
  ASSERT_EQ(observer->batches.size(), 2u);
  EXPECT_EQ(observer->batches[1].adapters, (std::map<std::string, int>{{"x", 1}}));
  ASSERT_EQ(observer->adapters.size(), 1u);
  EXPECT_EQ(observer->adapters[0].kind, AdapterEvent::Kind::kLoaded);
  EXPECT_GT(observer->adapters[0].load_duration.count(), 0);

  const EngineStats s = engine->stats();
  EXPECT_EQ((s.requests.at({"", absl::StatusCode::kOk})), 1);
  EXPECT_EQ((s.requests.at({"", absl::StatusCode::kInvalidArgument})), 1);
  EXPECT_EQ((s.requests.at({"x", absl::StatusCode::kOk})), 1);
  EXPECT_EQ(s.generated_tokens, 2 * kMaxNewTokens - (kMaxNewTokens - ok->generated_tokens) -
                                    (kMaxNewTokens - observer->requests[2].generated_tokens));
  EXPECT_EQ(s.adapters_loaded, 1);
  EXPECT_EQ(s.queued + s.preparing + s.running, 0);
}

}  // namespace
}  // namespace cpm::core::runtime
