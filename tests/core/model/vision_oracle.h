// SPDX-License-Identifier: Apache-2.0
//
// The reference for the vision tests: Debian's Python with python3-torch (PyTorch 1.13) running
// tests/core/model/vision_reference.py on weights and inputs the test writes to a safetensors file.
// /usr/bin/python3 on purpose: the first python3 on PATH may be another interpreter without torch.
#pragma once

#include <ATen/TensorOperators.h>
#include <ATen/ops/randn.h>

#include <cmath>
#include <cstdlib>
#include <iostream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "io/safetensors.h"
#include "model/parameters.h"
#include "nlohmann/json.hpp"
#include "test_util.h"

namespace cpm::testing {

inline constexpr const char* kTorchPython = "/usr/bin/python3";

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// Writes `tensors` and `config` (the file's "config" metadata) to <dir>/in.safetensors, runs
// `vision_reference.py mode` on it and returns its float32 or int64 `output`. Throws
// std::runtime_error naming the command when Python fails.
inline at::Tensor run_vision_reference(const TempDir& dir, const std::string& mode,
                                       const NamedTensors& tensors, const nlohmann::json& config) {
  const std::string in = dir.file("in.safetensors"), out = dir.file("out.safetensors");
  const absl::Status written =
      core::io::write_safetensors(in, tensors, {{"config", config.dump()}});
  if (!written.ok()) throw std::runtime_error(std::string(written.message()));
  const std::string script =
      std::string(CPM_TEST_SOURCE_DIR) + "/tests/core/model/vision_reference.py";
  const std::string command =
      std::string(kTorchPython) + " '" + script + "' " + mode + " '" + in + "' '" + out + "'";
  if (const int rc = std::system(command.c_str()); rc != 0) {
    throw std::runtime_error("`" + command + "` failed (status " + std::to_string(rc) +
                             "); the vision tests need Debian's python3-torch");
  }
  auto file = core::io::SafetensorsFile::open(out);
  if (!file.ok()) throw std::runtime_error(std::string(file.status().message()));
  auto output = (*file)->tensor("output");
  if (!output.ok()) throw std::runtime_error(std::string(output.status().message()));
  return output->clone();
}

// Random float32 weights for `specs`, scaled so activations stay O(1) through a few layers:
// matrices N(0, 1 / fan_in) with fan_in the product of all but the first dimension; norms
// (Init::kOnes) 1 + N(0, 0.01) and biases (Init::kZeros) N(0, 0.01), so that every parameter
// changes the output. Fills `params` and appends the same tensors to `file`.
inline void random_parameters(const std::vector<core::model::ParamSpec>& specs,
                              core::model::Parameters& params, NamedTensors& file) {
  for (const core::model::ParamSpec& spec : specs) {
    at::Tensor t = at::randn(spec.shape);
    switch (spec.init) {
      case core::model::Init::kNormal: {
        double fan_in = 1;
        for (size_t i = 1; i < spec.shape.size(); ++i) fan_in *= static_cast<double>(spec.shape[i]);
        t = t / std::sqrt(fan_in);
        break;
      }
      case core::model::Init::kOnes:
        t = 1 + 0.1 * t;
        break;
      case core::model::Init::kZeros:
        t = 0.1 * t;
        break;
    }
    params.set(spec.name, t);
    file.emplace_back(spec.name, t);
  }
}

// max |got - want| and that over max |want|; printed with `what` for the test log.
struct Error {
  double max_abs = 0;
  double relative = 0;
};
inline Error compare(const std::string& what, const at::Tensor& got, const at::Tensor& want) {
  const double max_abs = (got - want).abs().max().item<double>();
  const Error e{max_abs, max_abs / want.abs().max().item<double>()};
  std::cout << "[ vision  ] " << what << ": max abs error " << e.max_abs
            << ", relative to max |reference| " << e.relative << "\n";
  return e;
}

}  // namespace cpm::testing
