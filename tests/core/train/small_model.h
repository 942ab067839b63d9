// SPDX-License-Identifier: Apache-2.0
//
// A small MiniCPM-o of the real architecture built in memory (no tokenizer, vocabulary 512), for
// tests of LoRA, gradients and optimisation that need many forward passes.
#pragma once

#include <ATen/Context.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/zeros.h>

#include "model/minicpmo.h"
#include "model/random_checkpoint.h"

namespace cpm::testing {

inline core::io::ModelConfig small_config() {
  core::io::ModelConfig c = core::model::tiny_config();
  c.vocab_size = 512;
  c.tie_word_embeddings = false;
  return c;
}

inline core::model::Parameters small_parameters(const core::io::ModelConfig& config, uint64_t seed) {
  at::manual_seed(seed);
  core::model::Parameters p;
  for (const core::model::ParamSpec& s : core::model::minicpmo_parameter_specs(config)) {
    switch (s.init) {
      case core::model::Init::kOnes: p.set(s.name, at::ones(s.shape)); break;
      case core::model::Init::kZeros: p.set(s.name, at::zeros(s.shape)); break;
      case core::model::Init::kNormal: p.set(s.name, at::randn(s.shape) * 0.05); break;
    }
  }
  return p;
}

}  // namespace cpm::testing
