// SPDX-License-Identifier: Apache-2.0
//
// `cpmctl metrics`: cpmd's /metrics reduced to what an operator reads: requests and errors,
// latency quantiles from the histograms, the OCR queue, adapters, GPU memory, training jobs and
// the process. The JSON form is the summary itself; the text form is made from it.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "prometheus_text.h"

namespace cpmctl {

// Families the daemon does not export (no model, an older cpmd) are left out.
nlohmann::ordered_json summarize_metrics(const std::vector<Sample>& samples);

std::string format_metrics_summary(const nlohmann::ordered_json& summary);

}  // namespace cpmctl
