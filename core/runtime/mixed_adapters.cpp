// SPDX-License-Identifier: Apache-2.0
#include "runtime/mixed_adapters.h"

#include <algorithm>

namespace cpm::core::runtime {
namespace {

bool same(const std::weak_ptr<const int>& a, const std::shared_ptr<const int>& b) {
  return !a.owner_before(b) && !b.owner_before(a);
}

}  // namespace

MixedAdapterModels::MixedAdapterModels(const model::Qwen2ForCausalLM& base, size_t max_layouts)
    : base_(base), max_layouts_(std::max<size_t>(max_layouts, 1)) {}

const model::Qwen2ForCausalLM& MixedAdapterModels::get(
    const std::vector<const model::Qwen2ForCausalLM*>& row_models) {
  std::vector<model::Qwen2ForCausalLM::RowSegment> segments;
  for (const model::Qwen2ForCausalLM* m : row_models) {
    if (segments.empty() || segments.back().model != m) segments.push_back({m, 0});
    ++segments.back().rows;
  }
  if (segments.size() == 1) return *segments.front().model;

  prune();
  const auto match = [&](const Layout& l) {
    if (l.models.size() != segments.size()) return false;
    for (size_t i = 0; i < segments.size(); ++i) {
      if (l.rows[i] != segments[i].rows || !same(l.models[i], segments[i].model->identity())) return false;
    }
    return true;
  };
  if (auto it = std::find_if(layouts_.begin(), layouts_.end(), match); it != layouts_.end()) {
    layouts_.splice(layouts_.begin(), layouts_, it);
    return *layouts_.front().mixed;
  }
  Layout layout;
  layout.mixed = std::make_unique<model::Qwen2ForCausalLM>(base_.mixed(segments));  // may throw
  for (const auto& s : segments) {
    layout.models.push_back(s.model->identity());
    layout.rows.push_back(s.rows);
  }
  while (layouts_.size() >= max_layouts_) layouts_.pop_back();
  layouts_.push_front(std::move(layout));
  return *layouts_.front().mixed;
}

void MixedAdapterModels::prune() {
  layouts_.remove_if([](const Layout& l) {
    return std::any_of(l.models.begin(), l.models.end(), [](const auto& m) { return m.expired(); });
  });
}

}  // namespace cpm::core::runtime
