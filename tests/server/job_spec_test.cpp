// SPDX-License-Identifier: Apache-2.0
#include "job_spec.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace cpm::server {
namespace {

using ::testing::HasSubstr;

cpm::v1::JobSpec minimal() {
  cpm::v1::JobSpec s;
  s.set_dataset_id("ds-1");
  return s;
}

absl::StatusOr<cpm::v1::JobSpec> complete(cpm::v1::JobSpec s, c10::ScalarType dtype = c10::ScalarType::Float) {
  return complete_spec(std::move(s), "abc", dtype);
}

TEST(JobSpec, EveryUnsetFieldGetsTheDocumentedDefault) {
  auto s = complete(minimal());
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->name(), "job-abc");
  EXPECT_EQ(s->precision(), cpm::v1::PRECISION_FP32);
  EXPECT_EQ(s->data().model_max_length(), 2048);
  EXPECT_EQ(s->data().max_slice_nums(), 9);
  EXPECT_EQ(s->data().split_seed(), 42);
  EXPECT_FALSE(s->data().has_eval_fraction());  // 5%, at most 500: decided by the dataset's size
  EXPECT_TRUE(s->lora().use_lora());
  EXPECT_EQ(s->lora().r(), 64);
  EXPECT_EQ(s->lora().alpha(), 16);
  EXPECT_EQ(s->lora().dropout(), 0.1);
  EXPECT_EQ(s->lora().target_modules_regex(), R"(llm\..*layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|o_proj))");
  EXPECT_THAT(s->lora().modules_to_save(), ::testing::ElementsAre("embed_tokens", "resampler", "vpm"));
  EXPECT_EQ(s->optimizer().learning_rate(), 1e-6);
  EXPECT_EQ(s->optimizer().weight_decay(), 0.1);
  EXPECT_EQ(s->optimizer().adam_beta2(), 0.95);
  EXPECT_EQ(s->optimizer().lr_schedule(), cpm::v1::LR_SCHEDULE_COSINE);
  EXPECT_EQ(s->optimizer().warmup_ratio(), 0.01);
  EXPECT_TRUE(s->tune_vision());
  EXPECT_FALSE(s->tune_llm());
  EXPECT_EQ(s->max_steps(), 1000);
  EXPECT_TRUE(s->gradient_checkpointing());
  EXPECT_EQ(s->logging_steps(), 10);
  EXPECT_EQ(s->save_steps(), 500);
  EXPECT_EQ(s->save_total_limit(), 10);
  EXPECT_EQ(s->eval_max_new_tokens(), 512);
  // bf16 on a GPU.
  EXPECT_EQ(complete(minimal(), c10::ScalarType::BFloat16)->precision(), cpm::v1::PRECISION_BF16);
  // Without the vision tower, vpm is not saved.
  auto no_vision = minimal();
  no_vision.set_tune_vision(false);
  EXPECT_THAT(complete(no_vision)->lora().modules_to_save(), ::testing::ElementsAre("embed_tokens", "resampler"));
}

TEST(JobSpec, ExplicitValuesAreKeptAndReachTheEngine) {
  auto in = minimal();
  in.set_name("fit.v2");
  in.set_max_steps(0);
  in.set_num_epochs(3);
  in.mutable_lora()->set_r(8);
  in.mutable_lora()->add_target_modules("q_proj");
  in.mutable_optimizer()->set_learning_rate(2e-4);
  in.mutable_optimizer()->set_lr_schedule(cpm::v1::LR_SCHEDULE_LINEAR);
  in.mutable_data()->set_eval_size(7);
  in.mutable_data()->set_format(cpm::v1::DATASET_FORMAT_CSV);
  auto s = complete(in);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->name(), "fit.v2");
  EXPECT_FALSE(s->lora().has_target_modules_regex());  // the list form stays the only one
  const auto r = run_options(*s, "/out", "/adapters/fit.v2", "/models/base");
  EXPECT_EQ(r.config.max_steps, 0);
  EXPECT_EQ(r.config.num_epochs, 3);
  EXPECT_EQ(r.config.lora.r, 8);
  EXPECT_EQ(r.config.lora.target_modules, std::vector<std::string>{"q_proj"});
  EXPECT_FALSE(r.config.lora.target_modules_regex.has_value());
  EXPECT_EQ(r.config.lora.base_model_name_or_path, "/models/base");
  EXPECT_EQ(r.config.learning_rate, 2e-4);
  EXPECT_EQ(r.config.schedule, core::train::Schedule::kLinear);
  EXPECT_EQ(r.config.output_dir, "/out");
  EXPECT_EQ(r.adapter_dir, "/adapters/fit.v2");
  const auto d = data_options(*s);
  EXPECT_EQ(d.split.eval_size, 7);
  EXPECT_EQ(d.read.format, core::train::DatasetFormat::kCsv);
}

TEST(JobSpec, BadFieldsAreNamed) {
  const auto expect_bad = [](const std::function<void(cpm::v1::JobSpec&)>& edit, const std::string& field,
                             absl::StatusCode code = absl::StatusCode::kInvalidArgument) {
    auto s = minimal();
    edit(s);
    auto r = complete(s);
    ASSERT_FALSE(r.ok()) << field;
    EXPECT_EQ(r.status().code(), code) << r.status();
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(field));
  };
  expect_bad([](auto& s) { s.clear_dataset_id(); }, "spec.dataset is required");
  expect_bad([](auto& s) { s.set_name("a/b"); }, "spec.name");
  expect_bad([](auto& s) { s.set_name(std::string(65, 'x')); }, "spec.name");
  expect_bad([](auto& s) { s.mutable_lora()->set_r(0); }, "lora.r");
  expect_bad([](auto& s) { s.mutable_lora()->set_dropout(1); }, "lora.dropout");
  expect_bad([](auto& s) { s.mutable_lora()->set_target_modules_regex("("); }, "target_modules_regex");
  expect_bad([](auto& s) {
    s.mutable_lora()->set_target_modules_regex("q");
    s.mutable_lora()->add_target_modules("q_proj");
  }, "not both");
  expect_bad([](auto& s) { s.mutable_optimizer()->set_learning_rate(0); }, "learning_rate");
  expect_bad([](auto& s) { s.mutable_optimizer()->set_adam_beta1(1); }, "betas");
  expect_bad([](auto& s) { s.set_batch_size(0); }, "batch_size");
  expect_bad([](auto& s) { s.set_logging_steps(0); }, "logging_steps");
  expect_bad([](auto& s) { s.set_eval_max_new_tokens(1 << 30); }, "eval_max_new_tokens");
  expect_bad([](auto& s) { s.mutable_data()->set_model_max_length(1 << 20); }, "model_max_length");
  expect_bad([](auto& s) {
    s.mutable_data()->set_eval_size(3);
    s.mutable_data()->set_eval_fraction(0.1);
  }, "at most one");
  expect_bad([](auto& s) { s.mutable_data()->set_eval_fraction(1); }, "eval_fraction");
  expect_bad([](auto& s) { s.set_tune_llm(true); }, "tune_llm and use_lora");
  expect_bad([](auto& s) { s.set_precision(cpm::v1::PRECISION_BF16); }, "--dtype",
             absl::StatusCode::kFailedPrecondition);
  expect_bad([](auto& s) { s.set_precision(cpm::v1::PRECISION_FP16); }, "FP16: not supported",
             absl::StatusCode::kUnimplemented);
}

}  // namespace
}  // namespace cpm::server
