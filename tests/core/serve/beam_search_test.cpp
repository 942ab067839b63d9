// SPDX-License-Identifier: Apache-2.0
#include "serve/beam_search.h"

#include <ATen/ops/tensor.h>
#include <gtest/gtest.h>

#include <fstream>

#include "core/model/golden_util.h"
#include "io/safetensors.h"
#include "nlohmann/json.hpp"

namespace cpm::core::serve {
namespace {

// The tiny transformers Qwen2 of tests/data/model (see tests/core/model/make_qwen2_goldens.py).
const model::Qwen2ForCausalLM& tiny_llm() {
  static const model::Qwen2ForCausalLM* llm = [] {
    auto ckpt = io::SafetensorsCheckpoint::open(CPM_TEST_SOURCE_DIR
                                                "/tests/data/model/qwen2_tiny.safetensors");
    if (!ckpt.ok()) throw std::runtime_error(std::string(ckpt.status().message()));
    const io::ModelConfig config =
        testing::llm_config_from(testing::golden_meta(*ckpt, "golden.logits"));
    model::Parameters params;
    for (const auto& spec : model::qwen2_parameter_specs(config, "llm")) {
      params.set(spec.name, ckpt->tensor(spec.name)->clone());
    }
    return new model::Qwen2ForCausalLM(params, "llm", config);
  }();
  return *llm;
}

EarlyStopping early_stopping_from(const nlohmann::json& value) {
  if (value.is_string()) return EarlyStopping::kNever;  // "never"
  return value.get<bool>() ? EarlyStopping::kWhenFull : EarlyStopping::kHeuristic;
}

// transformers 5.17's generate(inputs_embeds=..., do_sample=False, num_beams=N, ...) on the tiny
// model (tests/core/serve/make_beam_goldens.py): chat(sampling=False)'s settings (3 beams,
// repetition penalty 1.2, the real stop ids, which the tiny vocabulary never produces), stop ids
// the beams do produce (hypotheses finishing early), 2 and 4 beams, length_penalty 2, and
// early_stopping True / "never". The same tokens, and the same sequence score.
TEST(BeamSearch, MatchesTransformersGenerate) {
  std::ifstream in(CPM_TEST_SOURCE_DIR "/tests/data/model/qwen2_tiny_beam.json");
  const auto goldens = nlohmann::json::parse(in);
  ASSERT_EQ(goldens["cases"].size(), 24u);
  int stopped_early = 0;
  for (const auto& c : goldens["cases"]) {
    const std::vector<int64_t> prompt = c["prompt"];
    const at::Tensor ids = at::tensor(prompt, at::kLong).unsqueeze(0);
    BeamSearchOptions options;
    options.num_beams = c["num_beams"];
    options.repetition_penalty = c["repetition_penalty"];
    options.length_penalty = c["length_penalty"];
    options.early_stopping = early_stopping_from(c["early_stopping"]);
    const GreedyOptions limits{.max_new_tokens = c["max_new_tokens"], .stop_ids = c["eos"]};
    const BeamSearchResult got = generate_beam(tiny_llm(), tiny_llm().embed(ids), limits, options);
    EXPECT_EQ(got.best.tokens, c["tokens"].get<std::vector<int32_t>>()) << c["name"];
    EXPECT_NEAR(got.score, c["score"].get<double>(), 1e-5) << c["name"];
    const bool stopped = c["stopped_by_eos"];
    EXPECT_EQ(got.best.finish, stopped ? FinishReason::kStop : FinishReason::kLength) << c["name"];
    if (stopped && got.best.tokens.size() < static_cast<size_t>(limits.max_new_tokens))
      ++stopped_early;
  }
  // The fixture exercises hypotheses that end with a stop id before max_new_tokens.
  EXPECT_GE(stopped_early, 6);
}

TEST(BeamSearch, RejectsZeroBeams) {
  const at::Tensor ids = at::tensor(std::vector<int64_t>{1, 2, 3}, at::kLong).unsqueeze(0);
  BeamSearchOptions options;
  options.num_beams = 0;
  EXPECT_THROW(generate_beam(tiny_llm(), tiny_llm().embed(ids),
                             {.max_new_tokens = 2, .stop_ids = {}}, options),
               c10::Error);
}

}  // namespace
}  // namespace cpm::core::serve
