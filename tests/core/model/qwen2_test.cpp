// SPDX-License-Identifier: Apache-2.0
#include "model/qwen2.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/abs.h>
#include <ATen/ops/allclose.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/randn.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "io/safetensors.h"
#include "model/weight_loader.h"
#include "runtime/mixed_adapters.h"
#include "core/model/golden_util.h"

namespace cpm::core::model {
namespace {

using ::testing::HasSubstr;

// A tiny Qwen2 from Hugging Face transformers (tests/core/model/make_qwen2_goldens.py): its weights
// under `llm.`, token ids, and the float32 logits and final hidden states transformers computed.
struct Golden {
  io::SafetensorsCheckpoint checkpoint;
  io::ModelConfig config;
};

Golden golden() {
  auto ckpt = io::SafetensorsCheckpoint::open(CPM_TEST_SOURCE_DIR "/tests/data/model/qwen2_tiny.safetensors");
  if (!ckpt.ok()) throw std::runtime_error(std::string(ckpt.status().message()));
  const io::ModelConfig c = testing::llm_config_from(testing::golden_meta(*ckpt, "golden.logits"));
  return {std::move(*ckpt), c};
}

std::vector<ParamSpec> llm_specs(const io::ModelConfig& c) { return qwen2_parameter_specs(c, "llm"); }

double max_rel_error(const at::Tensor& got, const at::Tensor& want) {
  return ((got - want).abs().max() / want.abs().max()).item<double>();
}

TEST(Qwen2, MatchesTransformersInFloat32) {
  const Golden g = golden();
  // The golden file also holds the inputs and outputs; load only the model's own keys.
  Parameters params;
  for (const ParamSpec& spec : llm_specs(g.config)) {
    auto t = g.checkpoint.tensor(spec.name);
    ASSERT_TRUE(t.ok()) << spec.name;
    ASSERT_EQ(t->sizes().vec(), spec.shape) << spec.name;
    params.set(spec.name, t->clone());
  }
  const Qwen2ForCausalLM llm(params, "llm", g.config);
  const at::Tensor ids = *g.checkpoint.tensor("golden.input_ids");
  const at::Tensor positions = *g.checkpoint.tensor("golden.position_ids");
  const at::Tensor hidden = llm.hidden_states(llm.embed(ids), positions);
  const at::Tensor logits = llm.logits(hidden);
  const double hidden_err = max_rel_error(hidden, *g.checkpoint.tensor("golden.hidden"));
  const double logits_err = max_rel_error(logits, *g.checkpoint.tensor("golden.logits"));
  std::cout << "[ qwen2   ] max relative error vs transformers: hidden " << hidden_err << ", logits "
            << logits_err << "\n";
  EXPECT_LT(hidden_err, 1e-4);
  EXPECT_LT(logits_err, 1e-4);
  EXPECT_TRUE(logits.argmax(-1).equal(g.checkpoint.tensor("golden.logits")->argmax(-1)));
}

Parameters llm_params(const Golden& g) {
  Parameters params;
  for (const ParamSpec& spec : llm_specs(g.config)) params.set(spec.name, g.checkpoint.tensor(spec.name)->clone());
  return params;
}

// The inference way (stacked projections, block-diagonal LoRA, in-place residual, grouped decode
// attention) computes what the training way (one projection at a time, as PEFT) does, with and
// without LoRA, over a whole sequence and a cached decode step.
TEST(Qwen2, InferenceWayEqualsTheTrainingWay) {
  const Golden g = golden();
  Parameters params = llm_params(g);
  const at::Tensor ids = *g.checkpoint.tensor("golden.input_ids");
  const at::Tensor positions = *g.checkpoint.tensor("golden.position_ids");
  for (const bool lora : {false, true}) {
    if (lora) {
      // q/k/v and o (layer 0), down (layer 0), gate only (layer 1): whole and partial groups.
      for (const char* module : {"layers.0.self_attn.q_proj", "layers.0.self_attn.k_proj", "layers.0.self_attn.v_proj",
                                 "layers.0.self_attn.o_proj", "layers.0.mlp.down_proj", "layers.1.mlp.gate_proj"}) {
        const std::string name = std::string("llm.model.") + module;
        const at::Tensor& w = params.get(name + ".weight");
        params.set(lora_a_name(name), at::randn({4, w.size(1)}) * 0.1);
        params.set(lora_b_name(name), at::randn({w.size(0), 4}) * 0.1);
      }
    }
    RunOptions serving;
    serving.lora_scaling = 2.0;
    RunOptions training = serving;
    training.training = true;
    const Qwen2ForCausalLM fast(params, "llm", g.config, serving), exact(params, "llm", g.config, training);
    const at::Tensor want = exact.hidden_states(exact.embed(ids), positions);
    const double err = max_rel_error(fast.hidden_states(fast.embed(ids), positions), want);
    EXPECT_LT(err, 1e-5) << (lora ? "with" : "without") << " LoRA";
    // The last position as a decode step after a cached prefix.
    const int64_t t = ids.size(1);
    KvCache fast_cache, exact_cache;
    fast.hidden_states(fast.embed(ids.narrow(1, 0, t - 1)), positions.narrow(1, 0, t - 1), &fast_cache);
    exact.hidden_states(exact.embed(ids.narrow(1, 0, t - 1)), positions.narrow(1, 0, t - 1), &exact_cache);
    const at::Tensor step = fast.hidden_states(fast.embed(ids.narrow(1, t - 1, 1)), positions.narrow(1, t - 1, 1), &fast_cache);
    EXPECT_LT(max_rel_error(step, exact.hidden_states(exact.embed(ids.narrow(1, t - 1, 1)),
                                                      positions.narrow(1, t - 1, 1), &exact_cache)),
              1e-5);
    EXPECT_LT(max_rel_error(step[0][0], want[0][t - 1]), 1e-5);
  }
}

// `base` plus random LoRA (r 4) on `modules` of every layer.
Parameters with_lora(const Parameters& base, const io::ModelConfig& c, const std::vector<std::string>& modules) {
  Parameters p = base;
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    for (const std::string& m : modules) {
      const std::string name = "llm.model.layers." + std::to_string(i) + "." + m;
      const at::Tensor& w = p.get(name + ".weight");
      p.set(lora_a_name(name), at::randn({4, w.size(1)}) * 0.1);
      p.set(lora_b_name(name), at::randn({w.size(0), 4}) * 0.1);
    }
  }
  return p;
}

// One pass over rows of different adapters (per-row LoRA, embeddings and lm_head) gives each row
// what its own model gives it alone, for a whole prompt and a cached decode step; a padding row
// past the segments runs on the base.
TEST(Qwen2, AMixedBatchGivesEachRowWhatItsOwnModelGives) {
  at::manual_seed(7);
  const Golden g = golden();
  const Parameters base_params = llm_params(g);
  const Parameters a_params =
      with_lora(base_params, g.config, {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"});
  Parameters b_params = with_lora(base_params, g.config, {"mlp.gate_proj", "mlp.down_proj", "self_attn.v_proj"});
  // b also has its own embeddings and lm_head (PEFT modules_to_save).
  for (const char* key : {"llm.model.embed_tokens.weight", "llm.lm_head.weight"}) {
    b_params.set(key, b_params.get(key) + at::randn(b_params.get(key).sizes()) * 0.05);
  }
  RunOptions a_options, b_options;
  a_options.lora_scaling = 2.0;
  b_options.lora_scaling = 0.5;
  const Qwen2ForCausalLM base(base_params, "llm", g.config), a(a_params, "llm", g.config, a_options),
      b(b_params, "llm", g.config, b_options);
  ASSERT_TRUE(base.can_mix(a));
  ASSERT_TRUE(base.can_mix(b));
  const Qwen2ForCausalLM mixed = base.mixed({{&a, 2}, {&base, 1}, {&b, 2}});
  const std::vector<const Qwen2ForCausalLM*> own = {&a, &a, &base, &b, &b, &base};  // row 5: padding

  const at::Tensor golden_ids = g.checkpoint.tensor("golden.input_ids")->narrow(0, 0, 1);  // [1, T]
  const int64_t t = golden_ids.size(1);
  const at::Tensor ids = (golden_ids.repeat({6, 1}) + at::arange(6).unsqueeze(1)) % g.config.vocab_size;
  const at::Tensor positions = at::arange(t).unsqueeze(0).repeat({6, 1});
  KvCache cache;
  const at::Tensor prefix = mixed.hidden_states(mixed.embed(ids.narrow(1, 0, t - 1)), positions.narrow(1, 0, t - 1), &cache);
  const at::Tensor step = mixed.hidden_states(mixed.embed(ids.narrow(1, t - 1, 1)), positions.narrow(1, t - 1, 1), &cache);
  const at::Tensor logits = mixed.logits(step.select(1, 0));  // [6, vocab]
  for (int64_t row = 0; row < 6; ++row) {
    const Qwen2ForCausalLM& m = *own[static_cast<size_t>(row)];
    const at::Tensor alone = m.hidden_states(m.embed(ids.narrow(0, row, 1)), positions.narrow(0, row, 1));  // [1, T, D]
    EXPECT_LT(max_rel_error(prefix[row], alone[0].narrow(0, 0, t - 1)), 1e-5) << "row " << row;
    EXPECT_LT(max_rel_error(step[row][0], alone[0][t - 1]), 1e-5) << "row " << row;
    EXPECT_LT(max_rel_error(logits[row], m.logits(alone[0][t - 1])), 1e-5) << "row " << row;
  }
  // The adapters do change their rows (the test can fail).
  const at::Tensor base_logits = base.logits(base.hidden_states(base.embed(ids), positions).select(1, t - 1));
  for (const int64_t row : {0, 1, 3, 4}) EXPECT_GT(max_rel_error(logits[row], base_logits[row]), 1e-3) << row;
  EXPECT_LT(max_rel_error(logits[2], base_logits[2]), 1e-5);
  EXPECT_NE(mixed.identity(), base.identity());

  // Not mixable: an adapter with its own decoder norm (another decoder), or LoRA being trained.
  Parameters norm_params = a_params;
  norm_params.set("llm.model.norm.weight", norm_params.get("llm.model.norm.weight") * 2);
  EXPECT_FALSE(base.can_mix(Qwen2ForCausalLM(norm_params, "llm", g.config)));
  Parameters trained = a_params;
  trained.set(lora_a_name("llm.model.layers.0.self_attn.q_proj"),
              trained.get(lora_a_name("llm.model.layers.0.self_attn.q_proj")).clone().requires_grad_(true));
  EXPECT_FALSE(base.can_mix(Qwen2ForCausalLM(trained, "llm", g.config)));
  // A mixed model runs for inference only.
  RunOptions training;
  training.training = true;
  EXPECT_THROW(Qwen2ForCausalLM(base_params, "llm", g.config, training).mixed({{&a, 1}}).hidden_states(
                   base.embed(ids.narrow(0, 0, 1)), positions.narrow(0, 0, 1)),
               c10::Error);
}

// The mixed models are kept per layout (so a decode graph captured for one is replayed), rebuilt
// for another layout, and dropped as soon as one of their adapters is gone.
TEST(MixedAdapterModels, KeepsALayoutsModelUntilAnAdapterGoes) {
  at::manual_seed(9);
  const Golden g = golden();
  const Parameters base_params = llm_params(g);
  const Qwen2ForCausalLM base(base_params, "llm", g.config);
  const Qwen2ForCausalLM a(with_lora(base_params, g.config, {"self_attn.q_proj"}), "llm", g.config);
  auto b = std::make_unique<Qwen2ForCausalLM>(with_lora(base_params, g.config, {"self_attn.o_proj"}), "llm", g.config);
  runtime::MixedAdapterModels mixer(base, /*max_layouts=*/2);

  EXPECT_EQ(&mixer.get({&a, &a}), &a) << "one model needs no mixing";
  EXPECT_EQ(mixer.layouts(), 0u);
  const Qwen2ForCausalLM* ab = &mixer.get({&a, b.get(), b.get()});
  EXPECT_EQ(&mixer.get({&a, b.get(), b.get()}), ab) << "the same layout, the same model";
  const Qwen2ForCausalLM* aab = &mixer.get({&a, &a, b.get()});
  EXPECT_NE(aab, ab) << "other row counts, another layout";
  EXPECT_EQ(mixer.layouts(), 2u);
  mixer.get({&base, &a});  // a third layout: the least recently used (a, b, b) goes
  EXPECT_EQ(mixer.layouts(), 2u);
  EXPECT_EQ(&mixer.get({&a, &a, b.get()}), aab);

  b.reset();  // b unloaded: its layouts go, so they no longer hold its tensors
  mixer.prune();
  EXPECT_EQ(mixer.layouts(), 1u);
}

// The loader puts q/k/v (weights, biases) and gate/up into one buffer each: the store holds views
// of it under the checkpoint keys, with the checkpoint's values, and the model runs them unchanged.
TEST(WeightLoader, StacksTheFusedProjectionsIntoOneBuffer) {
  const Golden g = golden();
  Parameters stacked;
  ASSERT_TRUE(load_parameters(g.checkpoint, testing::with_goldens(llm_specs(g.config), g.checkpoint), {}, stacked,
                              qwen2_stacked_projections(g.config, "llm"))
                  .ok());
  const std::string attn = "llm.model.layers.1.self_attn.";
  const at::Tensor& q = stacked.get(attn + "q_proj.weight");
  const at::Tensor& k = stacked.get(attn + "k_proj.weight");
  const at::Tensor& v = stacked.get(attn + "v_proj.weight");
  EXPECT_TRUE(k.storage().is_alias_of(q.storage()));
  EXPECT_EQ(k.data_ptr<float>(), q.data_ptr<float>() + q.numel());
  EXPECT_EQ(v.data_ptr<float>(), k.data_ptr<float>() + k.numel());
  EXPECT_TRUE(q.equal(*g.checkpoint.tensor(attn + "q_proj.weight")));
  EXPECT_TRUE(v.equal(*g.checkpoint.tensor(attn + "v_proj.weight")));
  const at::Tensor& up = stacked.get("llm.model.layers.0.mlp.up_proj.weight");
  EXPECT_EQ(up.data_ptr<float>(), stacked.get("llm.model.layers.0.mlp.gate_proj.weight").data_ptr<float>() +
                                      up.numel());
  // Back to back: a view; otherwise a copy.
  const at::Tensor qkv = stacked_rows({q, k, v});
  EXPECT_EQ(qkv.data_ptr(), q.data_ptr());
  EXPECT_TRUE(qkv.equal(at::cat({q, k, v})));
  const at::Tensor vq = stacked_rows({v, q});
  EXPECT_NE(vq.data_ptr(), v.data_ptr());
  EXPECT_TRUE(vq.equal(at::cat({v, q})));
  // The same numbers through the model, stacked by the loader or copied into a stack by the model.
  const at::Tensor ids = *g.checkpoint.tensor("golden.input_ids");
  const at::Tensor positions = *g.checkpoint.tensor("golden.position_ids");
  const Qwen2ForCausalLM a(stacked, "llm", g.config), b(llm_params(g), "llm", g.config);
  EXPECT_TRUE(a.hidden_states(a.embed(ids), positions).equal(b.hidden_states(b.embed(ids), positions)));
}

TEST(Qwen2, SpecsMatchTheCheckpointTableForTheRealModel) {
  io::ModelConfig real;  // defaults are MiniCPM-o-2.6's Qwen2.5-7B numbers
  const std::vector<ParamSpec> specs = llm_specs(real);
  EXPECT_EQ(specs.size(), 1u + 28u * 12u + 2u);
  std::map<std::string, std::vector<int64_t>> by_name;
  int64_t params = 0;
  for (const auto& s : specs) {
    by_name[s.name] = s.shape;
    int64_t n = 1;
    for (int64_t d : s.shape) n *= d;
    params += n;
  }
  EXPECT_EQ(by_name["llm.model.embed_tokens.weight"], (std::vector<int64_t>{151700, 3584}));
  EXPECT_EQ(by_name["llm.model.layers.27.self_attn.k_proj.weight"], (std::vector<int64_t>{512, 3584}));
  EXPECT_EQ(by_name["llm.model.layers.0.self_attn.q_proj.bias"], (std::vector<int64_t>{3584}));
  EXPECT_EQ(by_name.count("llm.model.layers.0.self_attn.o_proj.bias"), 0u);
  EXPECT_EQ(by_name["llm.model.layers.5.mlp.down_proj.weight"], (std::vector<int64_t>{3584, 18944}));
  EXPECT_EQ(by_name["llm.lm_head.weight"], (std::vector<int64_t>{151700, 3584}));
  EXPECT_EQ(params, 7'613'007'360);  // the LLM count the reference benchmark reports (shared/bench)
}

TEST(Qwen2, RmsNormAndRopeFollowTheReferenceFormulas) {
  const at::Tensor x = at::randn({2, 3, 8});
  const at::Tensor w = at::randn({8});
  const at::Tensor want = w * x * (x.pow(2).mean(-1, true) + 1e-6).rsqrt();
  EXPECT_TRUE(at::allclose(rms_norm(x, w, 1e-6), want, 1e-5, 1e-6));
  const auto [cos, sin] = rope_tables(at::arange(5, at::kLong).unsqueeze(0), 8, 10000.0);
  ASSERT_EQ(cos.sizes(), (at::IntArrayRef{1, 5, 8}));
  // Position 3, frequency index 1: angle 3 * 10000^(-2/8), repeated in both halves.
  const double angle = 3 * std::pow(10000.0, -2.0 / 8);
  EXPECT_NEAR(cos[0][3][1].item<double>(), std::cos(angle), 1e-6);
  EXPECT_NEAR(sin[0][3][5].item<double>(), std::sin(angle), 1e-6);
}

TEST(WeightLoader, StrictJoinReportsEveryMismatch) {
  const Golden g = golden();
  Parameters params;
  // The golden file has extra "golden.*" tensors: unexpected.
  auto report = load_parameters(g.checkpoint, llm_specs(g.config), {}, params);
  ASSERT_FALSE(report.ok());
  EXPECT_THAT(report.status().message(), HasSubstr("4 unexpected: golden.hidden"));
  // Specs the file lacks, and a wrong shape.
  std::vector<ParamSpec> specs = llm_specs(g.config);
  specs.push_back({"llm.model.layers.9.mlp.up_proj.weight", {128, 64}, Init::kNormal});
  specs[1].shape = {1, 2};
  for (const char* extra : {"golden.hidden", "golden.logits", "golden.input_ids", "golden.position_ids"}) {
    specs.push_back({extra, g.checkpoint.find(extra)->shape, Init::kNormal});
  }
  report = load_parameters(g.checkpoint, specs, {}, params);
  ASSERT_FALSE(report.ok());
  EXPECT_THAT(report.status().message(), HasSubstr("1 missing: llm.model.layers.9.mlp.up_proj.weight"));
  EXPECT_THAT(report.status().message(), HasSubstr("checkpoint [64, 64] vs expected [1, 2]"));
  EXPECT_TRUE(params.all().empty());  // nothing half-loaded
}

TEST(WeightLoader, LoadsIntoTheTargetDtypeAndSkipsAudio) {
  const Golden g = golden();
  const std::vector<ParamSpec> specs = testing::with_goldens(llm_specs(g.config), g.checkpoint);
  Parameters params;
  LoadOptions options;
  options.dtype = at::kBFloat16;
  size_t calls = 0;
  options.progress = [&](size_t done, size_t total, const std::string&) {
    ++calls;
    EXPECT_LE(done, total);
  };
  auto report = load_parameters(g.checkpoint, specs, options, params);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(calls, specs.size());
  EXPECT_EQ(params.get("llm.lm_head.weight").scalar_type(), at::kBFloat16);
  EXPECT_EQ(report->bytes, report->num_parameters * 2);
  EXPECT_TRUE(is_skipped_key("apm.layers.0.fc1.weight"));
  EXPECT_TRUE(is_skipped_key("tts.dvae.weight"));
  EXPECT_FALSE(is_skipped_key("vpm.post_layernorm.weight"));
}

}  // namespace
}  // namespace cpm::core::model
