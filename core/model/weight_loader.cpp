// SPDX-License-Identifier: Apache-2.0
#include "model/weight_loader.h"

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
                                           const LoadOptions& options, Parameters& out) {
  LoadReport report;
  std::map<std::string, const ParamSpec*> wanted;
  for (const ParamSpec& spec : specs) wanted[spec.name] = &spec;
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
  size_t done = 0;
  for (const ParamSpec& spec : specs) {
    auto mapped = checkpoint.tensor(spec.name);
    if (!mapped.ok()) return mapped.status();
    // One conversion from the mapped bytes to the target: no intermediate float32 copy.
    at::Tensor t = mapped->to(options.device, options.dtype, /*non_blocking=*/false, /*copy=*/true);
    report.num_parameters += t.numel();
    report.bytes += static_cast<int64_t>(t.numel() * t.element_size());
    loaded.set(spec.name, std::move(t));
    if (options.progress) options.progress(++done, specs.size(), spec.name);
  }
  out = std::move(loaded);
  return report;
}

}  // namespace cpm::core::model
