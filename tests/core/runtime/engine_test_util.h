// SPDX-License-Identifier: Apache-2.0
//
// Shared by the engine suites (CPU and GPU): the tiny checkpoint, formula images, test adapters,
// and the Gate that holds the engine thread so that work piles up deterministically.
#pragma once

#include <ATen/TensorOperators.h>
#include <ATen/ops/randn.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <iterator>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "io/peft_adapter.h"
#include "model/adapter.h"
#include "model/load.h"
#include "model/random_checkpoint.h"
#include "runtime/engine.h"

namespace cpm::testing {

// The `tiny` preset with random weights (seed 3) and the real Qwen tokenizer, written to `dir`.
inline void write_tiny_checkpoint(const std::string& dir) {
  core::model::RandomCheckpointOptions options;
  options.seed = 3;
  options.base_tokenizer_json = CPM_QWEN_TOKENIZER_DIR "/tokenizer.json";
  const absl::Status s =
      core::model::write_random_checkpoint(dir, core::model::tiny_config(), options);
  if (!s.ok()) throw std::runtime_error(std::string(s.message()));
}

inline std::unique_ptr<core::model::LoadedModel> load_tiny(
    const std::string& dir, const core::model::LoadOptions& options = {}) {
  auto loaded = core::model::load_model(dir, options);
  if (!loaded.ok()) throw std::runtime_error(std::string(loaded.status().message()));
  return *std::move(loaded);
}

// The encoded bytes of the first `n` formula images (by name) of tests/data.
inline std::vector<std::string> formula_images(size_t n) {
  std::vector<std::filesystem::path> paths;
  for (const auto& e :
       std::filesystem::directory_iterator(CPM_TEST_SOURCE_DIR "/tests/data/images/formulas")) {
    if (e.path().extension() == ".png") paths.push_back(e.path());
  }
  std::sort(paths.begin(), paths.end());
  std::vector<std::string> images;
  for (size_t i = 0; i < n; ++i) {
    std::ifstream in(paths.at(i), std::ios::binary);
    images.emplace_back(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  return images;
}

// A PEFT adapter (r 4, alpha 8) on every attention projection of the LLM with random lora_B, so it
// changes the answers; `corrupt`: one lora_A of the wrong shape. Written to `dir`.
// With `modules_to_save` (PEFT names: "embed_tokens", "resampler"), its own copies of them,
// perturbed so that they change the answers too.
inline std::string write_test_adapter(const core::model::LoadedModel& base, const std::string& dir,
                                      uint64_t seed, bool corrupt = false,
                                      const std::vector<std::string>& modules_to_save = {}) {
  core::io::PeftLoraConfig c;
  c.r = 4;
  c.lora_alpha = 8;
  c.lora_dropout = 0;
  c.target_modules_regex = R"(llm\..*layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|o_proj))";
  c.modules_to_save = modules_to_save;
  auto adapter = core::model::init_adapter(base.params, base.configs.model, c, seed);
  EXPECT_TRUE(adapter.ok()) << adapter.status();
  at::manual_seed(seed);
  for (auto& [key, t] : adapter->tensors) {
    if (key.find(".lora_B.") != std::string::npos) t = at::randn(t.sizes()) * 0.5;
    if (key.find(".lora_") == std::string::npos && t.is_floating_point()) t = t + at::randn(t.sizes(), t.options()) * 0.05;
  }
  if (corrupt) {
    at::Tensor& first = adapter->tensors.begin()->second;  // a lora_A [r, in]
    first = at::randn({first.size(0) + 1, first.size(1)});
  }
  EXPECT_TRUE(core::io::write_peft_adapter(dir, *adapter).ok());
  return dir;
}

// The LoRA elements of write_test_adapter on the tiny model: A [4, 128] and B [out, 4] for q (out
// 128), k, v (64 each) and o (128), in both layers.
inline constexpr int64_t kTestAdapterLoraElements =
    2 * 4 * ((128 + 128) + (128 + 64) + (128 + 64) + (128 + 128));

// Polls until `done` holds; false after 20 s, so that a bug fails the test instead of hanging it.
inline bool eventually(const std::function<bool()>& done) {
  for (int i = 0; i < 20000; ++i) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return false;
}

// Holds the engine thread inside a background step until released, so that work piles up.
class Gate {
 public:
  explicit Gate(core::runtime::Engine& engine) {
    auto entered = std::make_shared<std::promise<void>>();
    std::future<void> inside = entered->get_future();
    std::shared_future<void> open = open_.get_future().share();
    EXPECT_TRUE(engine
                    .set_background_task([entered, open](const cpm::core::model::LoadedModel&) {
                      entered->set_value();
                      open.wait();
                      return false;
                    })
                    .ok());
    inside.wait();
  }
  ~Gate() { release(); }
  void release() {
    if (released_) return;
    released_ = true;
    open_.set_value();
  }

 private:
  std::promise<void> open_;
  bool released_ = false;
};

}  // namespace cpm::testing
