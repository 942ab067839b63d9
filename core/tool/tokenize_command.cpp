// SPDX-License-Identifier: Apache-2.0
//
// cpm-tool tokenize / detokenize: JSON Lines in, JSON Lines out, one record per line, so that other
// tools (and the conformance tests) can drive the tokenizer.
#include <cstdio>
#include <iostream>
#include <string>

#include "commands.h"
#include "io/tokenizer.h"
#include "nlohmann/json.hpp"

namespace cpm::tool {
namespace {

using nlohmann::json;

int run(const std::string& model, bool decode, bool skip_special) {
  auto tokenizer = core::io::load_tokenizer(model);
  if (!tokenizer.ok()) {
    std::fprintf(stderr, "cpm-tool: %s\n", std::string(tokenizer.status().message()).c_str());
    return 1;
  }
  std::ios::sync_with_stdio(false);
  std::string line;
  long number = 0;
  while (std::getline(std::cin, line)) {
    ++number;
    json in;
    try {
      in = json::parse(line);
    } catch (const json::exception& e) {
      std::fprintf(stderr, "cpm-tool: line %ld: not JSON: %s\n", number, e.what());
      return 1;
    }
    if (!decode) {
      if (!in.is_string()) {
        std::fprintf(stderr, "cpm-tool: line %ld: expected a JSON string\n", number);
        return 1;
      }
      auto ids = (*tokenizer)->encode(in.get<std::string>());
      if (!ids.ok()) {
        std::fprintf(stderr, "cpm-tool: line %ld: %s\n", number, std::string(ids.status().message()).c_str());
        return 1;
      }
      std::cout << json(*ids).dump() << '\n';
    } else {
      std::vector<int32_t> ids;
      try {
        ids = in.get<std::vector<int32_t>>();
      } catch (const json::exception&) {
        std::fprintf(stderr, "cpm-tool: line %ld: expected a JSON array of token ids\n", number);
        return 1;
      }
      auto text = (*tokenizer)->decode(ids, skip_special);
      if (!text.ok()) {
        std::fprintf(stderr, "cpm-tool: line %ld: %s\n", number, std::string(text.status().message()).c_str());
        return 1;
      }
      std::cout << json(*text).dump() << '\n';
    }
  }
  std::cout.flush();
  return 0;
}

}  // namespace

void add_tokenize_commands(CLI::App& app, int& exit_code) {
  static std::string model;
  static bool skip_special = false;
  CLI::App* tokenize = app.add_subcommand(
      "tokenize", "JSON Lines of strings on stdin -> one JSON array of token ids per line");
  tokenize->add_option("--model", model, "checkpoint directory (tokenizer.json or tokenizer.model)")
      ->required();
  tokenize->footer(R"(Example: echo '"\\frac{1}{2}"' | cpm-tool tokenize --model ./MiniCPM-o-2_6)");
  tokenize->callback([&exit_code] { exit_code = run(model, /*decode=*/false, false); });

  CLI::App* detokenize = app.add_subcommand(
      "detokenize", "JSON Lines of token-id arrays on stdin -> one JSON string per line");
  detokenize->add_option("--model", model, "checkpoint directory")->required();
  detokenize->add_flag("--skip-special", skip_special, "drop special tokens such as <|im_end|>");
  detokenize->footer("Example: echo '[59, 37018, 90]' | cpm-tool detokenize --model ./MiniCPM-o-2_6");
  detokenize->callback([&exit_code] { exit_code = run(model, /*decode=*/true, skip_special); });
}

}  // namespace cpm::tool
