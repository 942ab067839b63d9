// SPDX-License-Identifier: Apache-2.0
//
// `cpmctl adapters` and `cpmctl adapter load|unload|get|export`, through cpm.v1.Adapters.
#pragma once

#include <CLI/CLI.hpp>

#include <string>

#include "connection.h"

namespace cpmctl {

struct AdapterOptions {
  std::string target;  // NAME, or PATH (contains '/') for load
  std::string name;    // load: the name to register a PATH under (default: its last component)
  bool pin = false;
  std::string out_dir;  // export: the folder to create
};

struct AdapterCommands {
  CLI::App* list = nullptr;
  CLI::App* load = nullptr;
  CLI::App* unload = nullptr;
  CLI::App* get = nullptr;
  CLI::App* export_ = nullptr;
};

AdapterCommands add_adapter_commands(CLI::App& app, AdapterOptions& options);

// Runs whichever of `commands` was parsed; kExitUsage when none.
int run_adapter_command(const GlobalOptions& global, const AdapterCommands& commands,
                        const AdapterOptions& options);

}  // namespace cpmctl
