// SPDX-License-Identifier: Apache-2.0
//
// A PEFT LoRA adapter put onto the base model's weights. The base tensors are shared, never
// modified: the adapted store holds the same handles plus the adapter's LoRA matrices and its own
// copies of the modules_to_save (vision tower, resampler, embeddings), so many adapters can sit
// beside one base model.
#pragma once

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "io/model_config.h"
#include "io/peft_adapter.h"
#include "model/lora.h"
#include "model/parameters.h"

namespace cpm::core::model {

// The modules that get LoRA under `config`'s target_modules (regex in full, or PEFT's name list),
// in checkpoint order. INVALID_ARGUMENT when nothing matches or when a match is a module that
// cpmd cannot put LoRA on (anything but the LLM decoder's projections), naming it.
absl::StatusOr<std::vector<std::string>> resolve_lora_targets(const io::ModelConfig& model,
                                                              const io::PeftLoraConfig& config);

// The parameter names under PEFT's modules_to_save names (a module matches a name when it equals
// it or ends with "." + it: "embed_tokens" -> llm.model.embed_tokens.weight). INVALID_ARGUMENT for
// a name that matches nothing.
absl::StatusOr<std::vector<std::string>> resolve_modules_to_save(const Parameters& base,
                                                                 const std::vector<std::string>& modules);

// A fresh adapter as PEFT initialises one: for each target module A [r, in] Kaiming-uniform
// (a = sqrt(5), so U(-1/sqrt(in), 1/sqrt(in))) and B [out, r] zero, both float32, drawn from a
// generator seeded with `seed`; plus a copy of every modules_to_save tensor. So the adapted model's
// output starts equal to the base model's.
absl::StatusOr<io::PeftAdapter> init_adapter(const Parameters& base, const io::ModelConfig& model,
                                             const io::PeftLoraConfig& config, uint64_t seed);

// The dtype of the LoRA matrices once applied: float32 as PEFT keeps them (training, parity
// checks), or the base weights' dtype (serving: bf16 LoRA matmuls, no casts in the decode step).
enum class LoraPrecision { kFloat32, kModelDtype };

// Checks every adapter tensor against the base (LoRA pairs complete, A [r, in] and B [out, r] for a
// LoRA-capable module of the right in/out, modules_to_save tensors named and shaped as in the
// base) and returns the adapted store: LoRA matrices on the base's device in `precision`, module
// copies in the base's dtype. Errors name the tensor and both shapes.
absl::StatusOr<Parameters> apply_adapter(const Parameters& base, const io::ModelConfig& model,
                                         const io::PeftAdapter& adapter,
                                         LoraPrecision precision = LoraPrecision::kFloat32);

// The same adapter merged: every targeted weight W becomes W + scaling * B A (computed in float32,
// rounded to W's dtype) and the modules_to_save are replaced; no LoRA tensors remain.
absl::StatusOr<Parameters> merge_adapter(const Parameters& base, const io::ModelConfig& model,
                                         const io::PeftAdapter& adapter);

// How a model with `config`'s adapter runs (scaling, dropout) for inference or training.
RunOptions run_options(const io::PeftLoraConfig& config, bool training);

}  // namespace cpm::core::model
