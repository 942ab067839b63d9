// SPDX-License-Identifier: Apache-2.0
//
// `cpmctl jobs`, `job ID`, `watch ID`, `cancel ID` and `datasets`, through cpm.v1.Training.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "settings.h"

namespace cpmctl {

struct JobsOptions {
  std::vector<std::string> states;  // jobs --state (words, repeatable or comma-separated)
  std::string job_id;               // job / watch / cancel
  std::optional<int64_t> from_step;  // watch
};

struct JobsCommands {
  CLI::App* jobs = nullptr;
  CLI::App* job = nullptr;
  CLI::App* watch = nullptr;
  CLI::App* cancel = nullptr;
  CLI::App* datasets = nullptr;
  bool parsed() const {
    return jobs->parsed() || job->parsed() || watch->parsed() || cancel->parsed() || datasets->parsed();
  }
};

JobsCommands add_jobs_commands(CLI::App& app, JobsOptions& options);

int run_jobs_command(const GlobalOptions& global, const JobsCommands& commands, const JobsOptions& options);

}  // namespace cpmctl
