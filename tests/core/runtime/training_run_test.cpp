// SPDX-License-Identifier: Apache-2.0
//
// A fine-tuning run as the engine's background work (tiny model, CPU): what the listener hears and
// in which order, that OCR is answered while it trains, cancellation at a step boundary, and that a
// failure inside a run ends the job instead of escaping into the engine.
#include "runtime/training_run.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <functional>
#include <future>
#include <mutex>
#include <stdexcept>

#include "core/runtime/engine_test_util.h"
#include "io/peft_adapter.h"
#include "runtime/engine.h"
#include "test_util.h"

namespace cpm::core::runtime {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Records what a run reports, as one line per call.
class Recorder final : public TrainingListener {
 public:
  bool throw_on_start = false;
  std::function<void()> after_checkpoint;  // runs on the engine thread
  void on_started(int64_t resumed_from, int64_t total_steps) override {
    if (throw_on_start) throw std::runtime_error("listener broke");
    add("started " + std::to_string(resumed_from) + "/" + std::to_string(total_steps));
  }
  void on_progress(const TrainingProgress& p) override {
    add("progress " + std::to_string(p.step) + (p.tokens_seen > 0 ? "" : " no tokens"));
  }
  void on_checkpoint(int64_t step, const std::string&, int64_t size_bytes) override {
    add("checkpoint " + std::to_string(step) + (size_bytes > 0 ? "" : " empty"));
    if (after_checkpoint) after_checkpoint();
  }
  void on_eval(const train::EvalReport& r, double) override {
    add("eval " + std::to_string(r.step) + " of " + std::to_string(r.metrics.count));
  }
  void on_finished(RunOutcome outcome, const absl::Status& error) override {
    std::lock_guard<std::mutex> lock(mu_);
    outcome_ = outcome;
    error_ = error;
    calls_.push_back("finished");
  }
  std::vector<std::string> calls() {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_;
  }
  bool finished() { return !calls().empty() && calls().back() == "finished"; }
  RunOutcome outcome() {
    std::lock_guard<std::mutex> lock(mu_);
    return outcome_;
  }
  absl::Status error() {
    std::lock_guard<std::mutex> lock(mu_);
    return error_;
  }

 private:
  void add(std::string call) {
    std::lock_guard<std::mutex> lock(mu_);
    calls_.push_back(std::move(call));
  }
  std::mutex mu_;
  std::vector<std::string> calls_;
  RunOutcome outcome_ = RunOutcome::kFailed;
  absl::Status error_;
};

class TrainingRunTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::write_tiny_checkpoint(dir_.file("tiny"));
    engine_ = std::make_unique<Engine>(testing::load_tiny(dir_.file("tiny")), EngineOptions{});
    ASSERT_TRUE(engine_->start().ok());
    auto builder = train::ExampleBuilder::create(engine_->tokenizer(), engine_->chat_template(),
                                                 engine_->configs().preprocessor, {});
    ASSERT_TRUE(builder.ok()) << builder.status();
    // Four formulas: three to train on, one to evaluate.
    const std::string csv = CPM_TEST_SOURCE_DIR "/tests/data/train/fit32/labels.csv";
    std::filesystem::create_directories(dir_.path() / "data" / "images");
    std::ifstream in(csv);
    std::ofstream out(dir_.path() / "data" / "labels.csv");
    std::string line;
    for (int i = 0; i < 5 && std::getline(in, line); ++i) {
      out << line << "\n";
      if (i == 0) continue;
      const std::string image = line.substr(0, line.find(','));
      std::filesystem::copy_file(std::filesystem::path(CPM_TEST_SOURCE_DIR "/tests/data/train/fit32") / image,
                                 dir_.path() / "data" / image);
    }
    out.close();
    train::DataOptions data;
    data.split.eval_size = 1;
    auto loaded = train::load_dataset(dir_.file("data/labels.csv"), *builder, data);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    split_ = loaded->split;
  }

  TrainingRunOptions options(int64_t steps) const {
    TrainingRunOptions o;
    o.config.max_steps = steps;
    o.config.learning_rate = 1e-3;
    o.config.lora.r = 4;
    o.config.lora.target_modules_regex = R"(llm\..*layers\.\d+\.self_attn\.(q_proj|v_proj))";
    o.config.lora.modules_to_save = {"resampler"};
    o.config.tune_vision = false;
    o.config.save_steps = 2;
    o.config.eval_steps = 0;
    o.config.eval_max_new_tokens = 4;
    o.config.output_dir = dir_.file("run");
    o.logging_steps = 2;
    o.adapter_dir = dir_.file("adapter");
    return o;
  }

  // Attaches a run to the engine and waits for it to finish.
  void run(TrainingRunOptions o, const std::shared_ptr<Recorder>& recorder,
           const std::shared_ptr<RunControl>& control = std::make_shared<RunControl>()) {
    auto r = std::make_shared<TrainingRun>(split_, std::move(o), recorder, control);
    ASSERT_TRUE(engine_->set_background_task([r](const model::LoadedModel& m) { return r->step(m); }).ok());
    ASSERT_TRUE(testing::eventually([&] { return recorder->finished(); }));
  }

  testing::TempDir dir_;
  std::unique_ptr<Engine> engine_;
  train::DatasetSplit split_;
};

TEST_F(TrainingRunTest, ReportsInOrderWritesTheAdapterAndOcrGoesOnMeanwhile) {
  auto recorder = std::make_shared<Recorder>();
  auto r = std::make_shared<TrainingRun>(split_, options(4), recorder, std::make_shared<RunControl>());
  ASSERT_TRUE(engine_->set_background_task([r](const model::LoadedModel& m) { return r->step(m); }).ok());
  OcrRequest ocr;
  ocr.image = testing::formula_images(1).front();
  ocr.decoding.max_new_tokens = 4;
  EXPECT_TRUE(engine_->submit(ocr).get().ok());  // answered while the job trains
  ASSERT_TRUE(testing::eventually([&] { return recorder->finished(); }));
  EXPECT_THAT(recorder->calls(), ElementsAre("started 0/4", "progress 1", "progress 2", "checkpoint 2", "progress 4",
                                             "checkpoint 4", "eval 4 of 1", "finished"));
  EXPECT_EQ(recorder->outcome(), RunOutcome::kSucceeded) << recorder->error();
  auto adapter = io::read_peft_adapter(dir_.file("adapter"));
  ASSERT_TRUE(adapter.ok()) << adapter.status();
  EXPECT_EQ(adapter->config.r, 4);
  // Run again on the same folder: it resumes after the last step and has only the end left to do.
  auto again = std::make_shared<Recorder>();
  run(options(4), again);
  EXPECT_THAT(again->calls(), ElementsAre("started 4/4", "eval 4 of 1", "finished"));
  EXPECT_EQ(again->outcome(), RunOutcome::kSucceeded) << again->error();
}

TEST_F(TrainingRunTest, AnOcrRequestDuringAnEvaluationWaitsForOneRecordNotTheWholeEvaluation) {
  // Three eval records of up to 64 tokens each; a request that arrives as the evaluation begins
  // (right after the final checkpoint) is answered before the evaluation ends.
  train::DatasetSplit split = split_;
  split.eval = {split_.eval[0], split_.eval[0], split_.eval[0]};
  TrainingRunOptions o = options(2);
  o.config.eval_max_new_tokens = 64;
  auto recorder = std::make_shared<Recorder>();
  std::atomic<bool> answered{false}, answered_before_eval{false};
  recorder->after_checkpoint = [&] {
    OcrRequest ocr;
    ocr.image = testing::formula_images(1).front();
    ocr.decoding.max_new_tokens = 2;
    engine_->submit(std::move(ocr), [&](absl::StatusOr<OcrResult> r) {
      const auto calls = recorder->calls();
      answered_before_eval = r.ok() && std::none_of(calls.begin(), calls.end(), [](const std::string& c) {
                               return c.rfind("eval", 0) == 0;
                             });
      answered = true;
    });
  };
  auto r = std::make_shared<TrainingRun>(split, std::move(o), recorder, std::make_shared<RunControl>());
  ASSERT_TRUE(engine_->set_background_task([r](const model::LoadedModel& m) { return r->step(m); }).ok());
  ASSERT_TRUE(testing::eventually([&] { return recorder->finished() && answered; }));
  EXPECT_THAT(recorder->calls(), ::testing::Contains("eval 2 of 3"));
  EXPECT_TRUE(answered_before_eval);
}

TEST_F(TrainingRunTest, CancelStopsAtTheNextStepAndPauseCheckpointsFirst) {
  auto cancelled = std::make_shared<Recorder>();
  auto control = std::make_shared<RunControl>();
  control->request(RunControl::Stop::kCancel);
  run(options(50), cancelled, control);
  EXPECT_EQ(cancelled->outcome(), RunOutcome::kCancelled);
  EXPECT_THAT(cancelled->calls(), ElementsAre("started 0/50", "finished"));

  auto paused = std::make_shared<Recorder>();
  auto pause = std::make_shared<RunControl>();
  TrainingRunOptions o = options(50);
  o.config.output_dir = dir_.file("paused");
  auto r = std::make_shared<TrainingRun>(split_, o, paused, pause);
  ASSERT_TRUE(engine_->set_background_task([r](const model::LoadedModel& m) { return r->step(m); }).ok());
  ASSERT_TRUE(testing::eventually([&] { return paused->calls().size() >= 3; }));  // past step 2
  pause->request(RunControl::Stop::kPause);
  ASSERT_TRUE(testing::eventually([&] { return paused->finished(); }));
  EXPECT_EQ(paused->outcome(), RunOutcome::kPaused);
  const auto calls = paused->calls();
  ASSERT_GE(calls.size(), 3u);
  EXPECT_THAT(calls[calls.size() - 2], HasSubstr("checkpoint"));  // the pause's own checkpoint
  EXPECT_TRUE(train::latest_checkpoint(o.config.output_dir).has_value());
}

TEST_F(TrainingRunTest, AFailureInsideARunEndsTheJobAndTheEngineKeepsServing) {
  auto broken = std::make_shared<Recorder>();
  broken->throw_on_start = true;
  run(options(4), broken);
  EXPECT_EQ(broken->outcome(), RunOutcome::kFailed);
  EXPECT_EQ(broken->error().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(broken->error().message()), HasSubstr("listener broke"));
  // The data vanished after the submission: the step names the record.
  std::filesystem::remove_all(dir_.path() / "data" / "images");
  auto missing = std::make_shared<Recorder>();
  TrainingRunOptions o = options(4);
  o.config.output_dir = dir_.file("missing");
  run(o, missing);
  EXPECT_EQ(missing->outcome(), RunOutcome::kFailed);
  EXPECT_THAT(std::string(missing->error().message()), HasSubstr("step 1"));
  OcrRequest ocr;
  ocr.image = testing::formula_images(1).front();
  ocr.decoding.max_new_tokens = 4;
  EXPECT_TRUE(engine_->submit(ocr).get().ok());
}

}  // namespace
}  // namespace cpm::core::runtime
