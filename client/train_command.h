// SPDX-License-Identifier: Apache-2.0
//
// `cpmctl train DATASET [flags]`: uploads a local dataset (or names an uploaded one or a path on the
// daemon host), submits a fine-tuning job with every JobSpec hyperparameter as a flag or from a
// --config file, prints the job id, and with --follow watches it to the end.
#pragma once

#include <CLI/CLI.hpp>

#include <string>

#include "job_spec_flags.h"
#include "settings.h"

namespace cpmctl {

struct TrainOptions {
  std::string dataset;       // a local .json / .jsonl / .csv, uploaded first
  std::string dataset_id;    // an uploaded dataset
  std::string dataset_path;  // a dataset on the daemon host
  std::string dataset_name;  // display name of the upload
  std::string config_file;   // a JobSpec as JSON or YAML
  bool validate_only = false;
  bool follow = false;
  JobSpecFlags spec;
};

CLI::App* add_train_command(CLI::App& app, TrainOptions& options);

int run_train(const GlobalOptions& global, const TrainOptions& options);

}  // namespace cpmctl
