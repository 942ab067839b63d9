// SPDX-License-Identifier: Apache-2.0
//
// cpm-tool: developer and operator utilities over cpm_core (no daemon, no gRPC).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <string>

#include "commands.h"

namespace cpm::tool {

int fail(std::string_view message) {
  std::fprintf(stderr, "cpm-tool: %.*s\n", static_cast<int>(message.size()), message.data());
  return 1;
}

int fail(const absl::Status& status) { return fail(std::string(status.message())); }

}  // namespace cpm::tool

int main(int argc, char** argv) {
  CLI::App app{"cpm-tool: utilities for MiniCPM-o-2.6 checkpoints (tokenize, preprocess, ...)"};
  app.require_subcommand(1);
  int exit_code = 0;
  cpm::tool::add_tokenize_commands(app, exit_code);
  cpm::tool::add_preprocess_command(app, exit_code);
  cpm::tool::add_prompt_command(app, exit_code);
  cpm::tool::add_mkmodel_command(app, exit_code);
  cpm::tool::add_forward_command(app, exit_code);
  cpm::tool::add_generate_command(app, exit_code);
  cpm::tool::add_metrics_command(app, exit_code);
  cpm::tool::add_train_command(app, exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  return exit_code;
}
