// SPDX-License-Identifier: Apache-2.0
#include "model/parameters.h"

#include <ATen/ops/cat.h>
#include <c10/util/Exception.h>

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

namespace {

// True when `parts` lie back to back, in order, in one buffer.
bool adjacent_rows(const std::vector<at::Tensor>& parts) {
  for (size_t i = 0; i < parts.size(); ++i) {
    const at::Tensor& p = parts[i];
    if (!p.is_contiguous()) return false;
    if (i == 0) continue;
    const at::Tensor& prev = parts[i - 1];
    if (!p.storage().is_alias_of(prev.storage()) || p.storage_offset() != prev.storage_offset() + prev.numel()) {
      return false;
    }
  }
  return true;
}

}  // namespace

at::Tensor stacked_rows(const std::vector<at::Tensor>& parts) {
  TORCH_CHECK(!parts.empty(), "stacked_rows: nothing to stack");
  const at::Tensor& first = parts.front();
  int64_t rows = 0;
  for (const at::Tensor& p : parts) {
    TORCH_CHECK(p.dim() == first.dim() && p.sizes().slice(1).equals(first.sizes().slice(1)) &&
                    p.scalar_type() == first.scalar_type() && p.device() == first.device(),
                "stacked_rows: ", p.sizes(), " ", p.scalar_type(), " does not stack onto ", first.sizes(), " ",
                first.scalar_type());
    rows += p.size(0);
  }
  if (!adjacent_rows(parts)) return at::cat(parts, 0);
  std::vector<int64_t> sizes = first.sizes().vec();
  sizes[0] = rows;
  // Contiguous strides of the stacked shape, starting where the first part starts.
  std::vector<int64_t> strides(sizes.size(), 1);
  for (int64_t d = static_cast<int64_t>(sizes.size()) - 2; d >= 0; --d) strides[d] = strides[d + 1] * sizes[d + 1];
  return first.as_strided(sizes, strides, first.storage_offset());
}

void stack_rows(Parameters& params, const std::vector<std::string>& names) {
  std::vector<at::Tensor> parts;
  for (const std::string& name : names) parts.push_back(params.get(name));
  if (adjacent_rows(parts)) return;
  const at::Tensor buffer = at::cat(parts, 0);
  int64_t row = 0;
  for (size_t i = 0; i < names.size(); ++i) {
    const int64_t n = parts[i].size(0);
    params.set(names[i], buffer.narrow(0, row, n));
    row += n;
  }
}

}  // namespace cpm::core::model
