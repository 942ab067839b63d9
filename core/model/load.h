// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "io/chat_template.h"
#include "io/model_config.h"
#include "io/tokenizer.h"
#include "model/minicpmo.h"
#include "model/weight_loader.h"

namespace cpm::core::model {

// Everything a checkpoint directory holds, ready to run.
struct LoadedModel {
  io::CheckpointConfigs configs;
  std::unique_ptr<io::Tokenizer> tokenizer;
  io::ChatTemplate chat_template;
  Parameters params;
  LoadReport report;
  std::unique_ptr<MiniCPMO> model;  // holds handles into `params`
};

// Reads the configs and the tokenizer, checks the index against the architecture (strictly), and
// loads the vision path and the LLM into options.dtype / options.device. Errors name the file.
absl::StatusOr<std::unique_ptr<LoadedModel>> load_model(const std::string& dir, const LoadOptions& options);

}  // namespace cpm::core::model
