// SPDX-License-Identifier: Apache-2.0
//
// `cpmctl metrics`: asks cpmd where its /metrics listens (Admin.GetInfo), fetches it over HTTP and
// prints a summary (metrics_summary.h).
#pragma once

#include <CLI/CLI.hpp>

#include <string>

#include "settings.h"

namespace cpmctl {

struct MetricsOptions {
  std::string url;  // http://HOST:PORT/metrics; empty: the address GetInfo reports
  bool raw = false;  // print the exposition text unchanged
};

CLI::App* add_metrics_command(CLI::App& app, MetricsOptions& options);

int run_metrics(const GlobalOptions& global, const MetricsOptions& options);

// Where to fetch: the daemon's metrics address, with a wildcard host (0.0.0.0, [::], empty)
// replaced by the host cpmctl reached the daemon at.
std::string metrics_fetch_address(const std::string& metrics_address, const std::string& server);

}  // namespace cpmctl
