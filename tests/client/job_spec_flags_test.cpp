// SPDX-License-Identifier: Apache-2.0
#include "job_spec_flags.h"

#include <gmock/gmock.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include "test_util.h"
#include "yaml_json.h"

namespace cpmctl {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// The flags parsed from `args` and applied over `spec`.
cpm::v1::JobSpec with_flags(std::vector<std::string> args, cpm::v1::JobSpec spec = {}) {
  CLI::App app;
  JobSpecFlags flags;
  add_job_spec_flags(&app, flags);
  std::reverse(args.begin(), args.end());  // CLI11 takes the arguments back to front
  app.parse(args);
  EXPECT_TRUE(apply_job_spec_flags(flags, &spec).ok());
  return spec;
}

TEST(JobSpecFlags, NoFlagsLeaveEverythingToTheDaemonsDefaults) {
  const cpm::v1::JobSpec spec = with_flags({});
  EXPECT_FALSE(spec.has_max_steps());
  EXPECT_FALSE(spec.lora().has_r());
  EXPECT_FALSE(spec.optimizer().has_learning_rate());
  EXPECT_FALSE(spec.has_tune_vision());
  EXPECT_EQ(spec.optimizer().lr_schedule(), cpm::v1::LR_SCHEDULE_UNSPECIFIED);
}

TEST(JobSpecFlags, EveryGroupReachesItsField) {
  const cpm::v1::JobSpec s = with_flags(
      {"--name", "latex-r16", "--format", "csv", "--model-max-length", "1024", "--max-slice-nums", "4",
       "--eval-size", "20", "--split-seed", "7", "--skip-bad-records", "--csv-prompt", "LaTeX?",
       "--no-use-lora", "--lora-r", "16", "--lora-alpha", "32", "--lora-dropout", "0.05", "--target-modules",
       "q_proj", "v_proj", "--modules-to-save", "resampler", "--use-rslora", "--lr", "1e-4", "--weight-decay",
       "0.01", "--adam-beta1", "0.8", "--adam-beta2", "0.99", "--adam-epsilon", "1e-6", "--max-grad-norm", "0",
       "--lr-schedule", "linear", "--warmup-steps", "5", "--no-tune-vision", "--tune-llm", "--max-steps", "0",
       "--num-epochs", "2.5", "--batch-size", "4", "--gradient-accumulation-steps", "2",
       "--no-gradient-checkpointing", "--precision", "fp32", "--seed", "3", "--logging-steps", "1",
       "--save-steps", "50", "--save-total-limit", "2", "--eval-steps", "0", "--eval-max-new-tokens", "64",
       "--label", "team=ocr", "--label", "note=a=b"});
  EXPECT_EQ(s.name(), "latex-r16");
  EXPECT_EQ(s.data().format(), cpm::v1::DATASET_FORMAT_CSV);
  EXPECT_EQ(s.data().model_max_length(), 1024);
  EXPECT_EQ(s.data().max_slice_nums(), 4);
  EXPECT_EQ(s.data().eval_size(), 20);
  EXPECT_EQ(s.data().split_seed(), 7);
  EXPECT_TRUE(s.data().skip_bad_records());
  EXPECT_EQ(s.data().csv_prompt(), "LaTeX?");
  EXPECT_TRUE(s.lora().has_use_lora());
  EXPECT_FALSE(s.lora().use_lora());
  EXPECT_EQ(s.lora().r(), 16);
  EXPECT_EQ(s.lora().alpha(), 32);
  EXPECT_EQ(s.lora().dropout(), 0.05);
  EXPECT_THAT(s.lora().target_modules(), ElementsAre("q_proj", "v_proj"));
  EXPECT_THAT(s.lora().modules_to_save(), ElementsAre("resampler"));
  EXPECT_TRUE(s.lora().use_rslora());
  EXPECT_EQ(s.optimizer().learning_rate(), 1e-4);
  EXPECT_EQ(s.optimizer().weight_decay(), 0.01);
  EXPECT_EQ(s.optimizer().adam_beta1(), 0.8);
  EXPECT_EQ(s.optimizer().adam_beta2(), 0.99);
  EXPECT_EQ(s.optimizer().adam_epsilon(), 1e-6);
  EXPECT_TRUE(s.optimizer().has_max_grad_norm());
  EXPECT_EQ(s.optimizer().max_grad_norm(), 0);
  EXPECT_EQ(s.optimizer().lr_schedule(), cpm::v1::LR_SCHEDULE_LINEAR);
  EXPECT_EQ(s.optimizer().warmup_steps(), 5);
  EXPECT_FALSE(s.tune_vision());
  EXPECT_TRUE(s.tune_llm());
  EXPECT_TRUE(s.has_max_steps());
  EXPECT_EQ(s.max_steps(), 0);
  EXPECT_EQ(s.num_epochs(), 2.5);
  EXPECT_EQ(s.batch_size(), 4);
  EXPECT_EQ(s.gradient_accumulation_steps(), 2);
  EXPECT_FALSE(s.gradient_checkpointing());
  EXPECT_EQ(s.precision(), cpm::v1::PRECISION_FP32);
  EXPECT_EQ(s.seed(), 3);
  EXPECT_EQ(s.logging_steps(), 1);
  EXPECT_EQ(s.save_steps(), 50);
  EXPECT_EQ(s.save_total_limit(), 2);
  EXPECT_EQ(s.eval_steps(), 0);
  EXPECT_EQ(s.eval_max_new_tokens(), 64);
  EXPECT_EQ(s.labels().at("team"), "ocr");
  EXPECT_EQ(s.labels().at("note"), "a=b");
}

TEST(JobSpecFlags, FlagsOverrideTheConfigAndReplaceTheExcludedAlternative) {
  cpm::v1::JobSpec config;
  config.mutable_data()->set_eval_fraction(0.1);
  config.mutable_lora()->set_target_modules_regex("llm.*");
  config.mutable_lora()->set_r(8);
  config.set_max_steps(10);
  (*config.mutable_labels())["team"] = "a";
  const cpm::v1::JobSpec s =
      with_flags({"--eval-size", "3", "--target-modules", "q_proj", "--lora-r", "32", "--label", "team=b"}, config);
  EXPECT_FALSE(s.data().has_eval_fraction());
  EXPECT_EQ(s.data().eval_size(), 3);
  EXPECT_FALSE(s.lora().has_target_modules_regex());
  EXPECT_THAT(s.lora().target_modules(), ElementsAre("q_proj"));
  EXPECT_EQ(s.lora().r(), 32);
  EXPECT_EQ(s.max_steps(), 10);  // not given: the config's
  EXPECT_EQ(s.labels().at("team"), "b");
}

TEST(JobSpecFlags, BadValuesAreUsageErrors) {
  CLI::App app;
  JobSpecFlags flags;
  add_job_spec_flags(&app, flags);
  EXPECT_THROW(app.parse(std::vector<std::string>{"weekly", "--lr-schedule"}), CLI::ValidationError);
  CLI::App app2;
  JobSpecFlags flags2;
  add_job_spec_flags(&app2, flags2);
  EXPECT_THROW(app2.parse(std::vector<std::string>{"0.1", "--eval-fraction", "2", "--eval-size"}), CLI::ExcludesError);
  JobSpecFlags label;
  label.labels = {"novalue"};
  cpm::v1::JobSpec spec;
  EXPECT_THAT(apply_job_spec_flags(label, &spec).message(), HasSubstr("--label novalue is not KEY=VALUE"));
}

TEST(JobSpecFile, JsonAndYamlGiveTheSameSpec) {
  cpm::testing::TempDir dir;
  const std::string json = dir.write("spec.json", R"({
    "name": "latex", "max_steps": "200", "tune_vision": false,
    "lora": {"r": 16, "target_modules": ["q_proj", "v_proj"]},
    "optimizer": {"learning_rate": 1e-5, "lr_schedule": "LR_SCHEDULE_CONSTANT"},
    "data": {"eval_size": 10, "csv_prompt": "123"},
    "labels": {"team": "ocr"}})");
  const std::string yaml = dir.write("spec.yaml", R"(# the same spec
name: latex
max_steps: 200
tune_vision: no
lora:
  r: 16
  target_modules: [q_proj, v_proj]
optimizer:
  learning_rate: 1e-5
  lr_schedule: LR_SCHEDULE_CONSTANT
data:
  eval_size: 10
  csv_prompt: "123"
labels:
  team: ocr
)");
  auto from_json = read_job_spec_file(json);
  ASSERT_TRUE(from_json.ok()) << from_json.status();
  EXPECT_EQ(from_json->lora().r(), 16);
  EXPECT_EQ(from_json->optimizer().lr_schedule(), cpm::v1::LR_SCHEDULE_CONSTANT);
  auto from_yaml = read_job_spec_file(yaml);
  ASSERT_TRUE(from_yaml.ok()) << from_yaml.status();
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*from_json, *from_yaml))
      << from_json->DebugString() << "\nvs\n"
      << from_yaml->DebugString();
}

TEST(JobSpecFile, UnknownFieldsAndWrongTypesNameTheFile) {
  cpm::testing::TempDir dir;
  auto bad = read_job_spec_file(dir.write("bad.json", R"({"lora": {"rank": 16}})"));
  EXPECT_TRUE(absl::IsInvalidArgument(bad.status()));
  EXPECT_THAT(bad.status().message(), HasSubstr("bad.json"));
  EXPECT_THAT(bad.status().message(), HasSubstr("rank"));
  EXPECT_THAT(read_job_spec_file(dir.write("t.yaml", "tune_vision: maybe\n")).status().message(),
              HasSubstr("t.yaml"));
  EXPECT_THAT(read_job_spec_file(dir.write("broken.yaml", "lora: {r: 16\n")).status().message(),
              HasSubstr("not valid YAML"));
  EXPECT_THAT(read_job_spec_file(dir.write("spec.txt", "{}")).status().message(), HasSubstr(".json, .yaml or .yml"));
  EXPECT_TRUE(absl::IsNotFound(read_job_spec_file(dir.file("none.json")).status()));
}

TEST(YamlToJson, ScalarsTakeTheirNaturalTypesUnlessQuoted) {
  auto j = yaml_to_json("a: 1\nb: 1.5\nc: true\nd: off\ne: ~\nf: text\ng: '2'\nh: [1, x]\n");
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ(*j, R"({"a":1,"b":1.5,"c":true,"d":false,"e":null,"f":"text","g":"2","h":[1,"x"]})");
}

}  // namespace
}  // namespace cpmctl
