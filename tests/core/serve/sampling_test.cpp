// SPDX-License-Identifier: Apache-2.0
#include "serve/sampling.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/isinf.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros_like.h>
#include <gtest/gtest.h>

#include "io/safetensors.h"
#include "nlohmann/json.hpp"

namespace cpm::core::serve {
namespace {

// transformers' RepetitionPenalty, Temperature, TopK and TopP processors, in generate()'s order, on
// random scores (tests/core/serve/make_sampling_goldens.py): the same kept set and the same values.
TEST(Sampling, ProcessorsMatchTransformers) {
  auto ckpt = io::SafetensorsCheckpoint::open(CPM_TEST_SOURCE_DIR "/tests/data/model/sampling_goldens.safetensors");
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  const auto cases = nlohmann::json::parse(ckpt->file_of("case.0.scores")->header().metadata.at("cases"));
  ASSERT_EQ(cases.size(), 5u);
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string at = "case." + std::to_string(i) + ".";
    SamplingOptions o;
    o.temperature = cases[i]["temperature"];
    o.top_k = cases[i]["top_k"];
    o.top_p = cases[i]["top_p"];
    o.repetition_penalty = cases[i]["repetition_penalty"];
    const at::Tensor gen = *ckpt->tensor(at + "generated");
    const std::vector<int32_t> generated(gen.data_ptr<int64_t>(), gen.data_ptr<int64_t>() + gen.numel());
    const at::Tensor got = process_scores(*ckpt->tensor(at + "scores"), generated, o);
    const at::Tensor want = *ckpt->tensor(at + "processed");
    ASSERT_TRUE(at::isinf(got).equal(at::isinf(want))) << "case " << i << ": different tokens kept";
    const at::Tensor finite = at::where(at::isinf(want), at::zeros_like(want), want);
    const at::Tensor ours = at::where(at::isinf(got), at::zeros_like(got), got);
    EXPECT_LT((ours - finite).abs().max().item<double>(), 1e-5) << "case " << i;
  }
}

TEST(Sampling, SeededDrawsRepeatAndTopKOneIsGreedy) {
  const at::Tensor scores = at::randn({300});
  SamplingOptions o;
  o.top_k = 1;
  auto g = at::make_generator<at::CPUGeneratorImpl>(1);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(sample_token(process_scores(scores, {}, o), g), scores.argmax().item<int64_t>());
  }
  o = SamplingOptions{};
  auto a = at::make_generator<at::CPUGeneratorImpl>(42), b = at::make_generator<at::CPUGeneratorImpl>(42);
  const at::Tensor processed = process_scores(scores, {1, 2, 3}, o);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(sample_token(processed, a), sample_token(processed, b));
}

}  // namespace
}  // namespace cpm::core::serve
