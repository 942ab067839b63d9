// SPDX-License-Identifier: Apache-2.0
//
// `cpmctl dataset prepare|check|render`: local dataset tools; they need no daemon.
#pragma once

#include <CLI/CLI.hpp>

#include <string>

#include "dataset_prepare.h"
#include "formula_render.h"

namespace cpmctl {

struct DatasetOptions {
  PrepareOptions prepare;
  std::string check_file;
  RenderOptions render;
};

struct DatasetCommands {
  CLI::App* prepare = nullptr;
  CLI::App* check = nullptr;
  CLI::App* render = nullptr;
  bool parsed() const { return prepare->parsed() || check->parsed() || render->parsed(); }
};

DatasetCommands add_dataset_commands(CLI::App& app, DatasetOptions& options);

int run_dataset_command(const DatasetCommands& commands, const DatasetOptions& options, bool json);

}  // namespace cpmctl
