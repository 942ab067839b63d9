// SPDX-License-Identifier: Apache-2.0
//
// cpm-tool's subcommands. Each add_*_command registers one subcommand on the app, with its flags and
// a callback that does the work and sets the process exit code through `exit_code`.
#pragma once

#include <CLI/CLI.hpp>

#include <string_view>

#include "absl/status/status.h"

namespace cpm::tool {

// Exit codes: 0 ok, 1 the work failed (one clear line on stderr), 2 usage error.

// Prints "cpm-tool: <message>" on stderr and returns 1, the failure exit code.
int fail(std::string_view message);
int fail(const absl::Status& status);

// tokenize / detokenize: JSON Lines through the checkpoint's tokenizer.
void add_tokenize_commands(CLI::App& app, int& exit_code);

// preprocess: one image decoded and sliced as the model sees it (JSON; --dump writes the tensors).
void add_preprocess_command(CLI::App& app, int& exit_code);

// forward: one image + question through the model, intermediate tensors written to safetensors.
void add_forward_command(CLI::App& app, int& exit_code);

// generate: the model's greedy answer for one image and an optional question.
void add_generate_command(CLI::App& app, int& exit_code);

// metrics: LaTeX OCR metrics of a predictions file against a references file (JSON).
void add_metrics_command(CLI::App& app, int& exit_code);

// mkmodel: a checkpoint directory of the real format with random weights (tiny or full).
void add_mkmodel_command(CLI::App& app, int& exit_code);

// train: LoRA fine-tuning of a recipe dataset into a PEFT adapter directory (resumable).
void add_train_command(CLI::App& app, int& exit_code);

// prompt: input ids and image bounds of the chat-formatted prompt for one image and a question.
void add_prompt_command(CLI::App& app, int& exit_code);

}  // namespace cpm::tool
