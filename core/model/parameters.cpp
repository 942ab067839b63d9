// SPDX-License-Identifier: Apache-2.0
#include "model/parameters.h"

#include <stdexcept>

namespace cpm::core::model {

void add_spec(std::vector<ParamSpec>& specs, const std::string& scope, const std::string& suffix,
              std::vector<int64_t> shape, Init init) {
  specs.push_back({scope + "." + suffix, std::move(shape), init});
}

const at::Tensor& Parameters::get(const std::string& name) const {
  const auto it = tensors_.find(name);
  if (it == tensors_.end()) throw std::out_of_range("model parameter '" + name + "' is not loaded");
  return it->second;
}

}  // namespace cpm::core::model
