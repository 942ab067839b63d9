// SPDX-License-Identifier: Apache-2.0
#include "model/weight_loader.h"

#include <ATen/ops/empty.h>

#include <algorithm>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace cpm::core::model {
namespace {

std::string shape_text(const std::vector<int64_t>& shape) {
  return "[" + absl::StrJoin(shape, ", ") + "]";
}

std::string listing(const char* what, const std::vector<std::string>& names) {
  if (names.empty()) return "";
  std::vector<std::string> head(names.begin(), names.begin() + std::min<size_t>(names.size(), 5));
  return absl::StrCat("; ", names.size(), " ", what, ": ", absl::StrJoin(head, ", "),
                      names.size() > 5 ? ", ..." : "");
}

}  // namespace

bool is_skipped_key(const std::string& name) {
  for (const char* prefix : {"apm.", "audio_projection_layer.", "audio_avg_pooler.", "tts."}) {
    if (name.rfind(prefix, 0) == 0) return true;
  }
  return false;
}

absl::StatusOr<LoadReport> load_parameters(const io::SafetensorsCheckpoint& checkpoint,
                                           const std::vector<ParamSpec>& specs,
                                           const LoadOptions& options, Parameters& out,
                                           const std::vector<std::vector<std::string>>& stacked) {
  LoadReport report;
  std::map<std::string, const ParamSpec*> wanted;
  for (const ParamSpec& spec : specs) wanted[spec.name] = &spec;
  // Each stacked spec's group and first row in it; a group's buffer is allocated at its first spec.
  struct Slot {
    size_t group;
    int64_t row;
  };
  std::map<std::string, Slot> slots;
  std::vector<std::vector<int64_t>> group_shapes(stacked.size());
  for (size_t g = 0; g < stacked.size(); ++g) {
    if (stacked[g].empty()) continue;
    int64_t rows = 0;
    for (const std::string& name : stacked[g]) {
      const auto it = wanted.find(name);
      if (it == wanted.end()) return absl::InvalidArgumentError(absl::StrCat("stacked tensor ", name, " is not a spec"));
      const std::vector<int64_t>& shape = it->second->shape;
      std::vector<int64_t>& group = group_shapes[g];
      if (group.empty()) group = shape;
      if (shape.empty() || !std::equal(shape.begin() + 1, shape.end(), group.begin() + 1, group.end())) {
        return absl::InvalidArgumentError(absl::StrCat("stacked tensor ", name, " ", shape_text(shape),
                                                       " does not stack onto ", shape_text(group)));
      }
      slots[name] = {g, rows};
      rows += shape[0];
    }
    group_shapes[g][0] = rows;
  }
  for (const std::string& name : checkpoint.names()) {
    if (is_skipped_key(name)) {
      ++report.skipped;
    } else if (!wanted.count(name)) {
      report.unexpected.push_back(name);
    }
  }
  for (const ParamSpec& spec : specs) {
    const io::TensorInfo* info = checkpoint.find(spec.name);
    if (info == nullptr) {
      report.missing.push_back(spec.name);
    } else if (info->shape != spec.shape) {
      report.mis_shaped.push_back(absl::StrCat(spec.name, ": checkpoint ", shape_text(info->shape),
                                               " vs expected ", shape_text(spec.shape)));
    }
  }
  if (!report.missing.empty() || !report.unexpected.empty() || !report.mis_shaped.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the checkpoint does not match the architecture of its config.json",
        listing("missing", report.missing), listing("unexpected", report.unexpected),
        listing("mis-shaped", report.mis_shaped)));
  }
  Parameters loaded;
  std::vector<at::Tensor> buffers(stacked.size());
  size_t done = 0;
  for (const ParamSpec& spec : specs) {
    auto mapped = checkpoint.tensor(spec.name);
    if (!mapped.ok()) return mapped.status();
    // One conversion from the mapped bytes to the target: no intermediate float32 copy.
    at::Tensor t;
    if (const auto slot = slots.find(spec.name); slot != slots.end()) {
      at::Tensor& buffer = buffers[slot->second.group];
      if (!buffer.defined()) {
        buffer = at::empty(group_shapes[slot->second.group], at::TensorOptions().device(options.device).dtype(options.dtype));
      }
      t = buffer.narrow(0, slot->second.row, spec.shape[0]);
      t.copy_(*mapped);
    } else {
      t = mapped->to(options.device, options.dtype, /*non_blocking=*/false, /*copy=*/true);
    }
    report.num_parameters += t.numel();
    report.bytes += static_cast<int64_t>(t.numel() * t.element_size());
    loaded.set(spec.name, std::move(t));
    if (options.progress) options.progress(++done, specs.size(), spec.name);
  }
  out = std::move(loaded);
  return report;
}

}  // namespace cpm::core::model
