// SPDX-License-Identifier: Apache-2.0
#include "train/trainer.h"

#include <ATen/Context.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/_foreach_mul.h>
#include <ATen/ops/_foreach_norm.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/cross_entropy_loss.h>
#include <ATen/ops/full.h>
#include <ATen/ops/masked_select.h>
#include <ATen/ops/nonzero.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <mutex>
#include <regex>
#include <stdexcept>

#include "absl/strings/str_cat.h"
#include "common/device.h"
#include "common/logging.h"
#include "common/torch_compat.h"
#include "io/atomic_file.h"
#include "io/model_config.h"
#include "io/safetensors.h"
#include "model/adapter.h"
#include "nlohmann/json.hpp"
#include "serve/answer_text.h"
#include "serve/generation.h"
#include "train/collator.h"

namespace cpm::core::train {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// A record that could not be turned into an example mid-training (its image changed on disk).
struct BadExample : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A step's work could not be captured as a CUDA graph (an operation that waits for the device,
// such as embedding's backward pass on some LibTorch versions). Nothing of the capture ran.
struct CaptureFailed : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::unique_ptr<StepGraphs::Graph> capture(StepGraphs& graphs, const std::function<void()>& work) {
  try {
    return graphs.capture(work);
  } catch (const std::exception& e) {
    throw CaptureFailed(e.what());
  }
}

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// The training order of epoch `epoch`: a Fisher-Yates shuffle seeded by (seed, epoch), the same
// on every machine.
std::vector<size_t> epoch_order(size_t n, uint64_t seed, uint64_t epoch) {
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  uint64_t state = seed * 0x100000001b3ULL + epoch;
  for (size_t i = n; i > 1; --i) std::swap(order[i - 1], order[splitmix64(state) % i]);
  return order;
}

at::Generator device_generator(c10::Device device) { return at::globalContext().defaultGenerator(device); }

std::string checkpoint_name(int64_t step) { return absl::StrCat("checkpoint-", step); }

// The complete checkpoint folders under `output_dir`, oldest first. Staged folders start with '.',
// so a folder named checkpoint-<step> is complete.
std::vector<std::pair<int64_t, std::string>> checkpoints(const std::string& output_dir) {
  static const std::regex name(R"(checkpoint-(\d+))");
  std::vector<std::pair<int64_t, std::string>> all;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(output_dir, ec)) {
    std::smatch m;
    const std::string file = entry.path().filename().string();
    if (entry.is_directory() && std::regex_match(file, m, name)) all.emplace_back(std::stoll(m[1].str()), entry.path());
  }
  std::sort(all.begin(), all.end());
  return all;
}

absl::Status from_exception(const std::exception& e) {
  const std::string what = e.what();
  if (dynamic_cast<const BadExample*>(&e) != nullptr) return absl::InvalidArgumentError(what);
  if (what.find("out of memory") != std::string::npos) {
    return absl::ResourceExhaustedError(absl::StrCat("out of device memory during a training step: ",
                                                     what.substr(0, what.find('\n')),
                                                     " (lower batch_size or model_max_length, or enable "
                                                     "gradient_checkpointing)"));
  }
  return absl::InternalError(absl::StrCat("training step failed: ", what.substr(0, what.find('\n'))));
}

}  // namespace

absl::Status validate(const TrainConfig& c) {
  const auto bad = [](const std::string& why) { return absl::InvalidArgumentError(why); };
  if (c.tune_llm && c.use_lora) return bad("tune_llm and use_lora cannot both be set (as in the recipe)");
  if (c.use_lora && c.lora.r <= 0) return bad("lora r must be positive");
  if (c.learning_rate <= 0 || !std::isfinite(c.learning_rate)) return bad("learning_rate must be positive");
  if (c.adam.beta1 < 0 || c.adam.beta1 >= 1 || c.adam.beta2 < 0 || c.adam.beta2 >= 1) {
    return bad("adam betas must be in [0, 1)");
  }
  if (c.adam.eps <= 0) return bad("adam_epsilon must be positive");
  if (c.adam.weight_decay < 0) return bad("weight_decay must be >= 0");
  if (c.max_grad_norm < 0) return bad("max_grad_norm must be >= 0");
  if (c.warmup_ratio < 0 || c.warmup_ratio > 1) return bad("warmup_ratio must be in [0, 1]");
  if (c.warmup_steps < 0) return bad("warmup_steps must be >= 0");
  if (c.max_steps < 0) return bad("max_steps must be >= 0");
  if (c.max_steps == 0 && !(c.num_epochs > 0)) return bad("num_epochs must be positive when max_steps is 0");
  if (c.batch_size < 1) return bad("batch_size must be >= 1");
  if (c.gradient_accumulation_steps < 1) return bad("gradient_accumulation_steps must be >= 1");
  if (c.save_steps < 0 || c.eval_steps < 0) return bad("save_steps and eval_steps must be >= 0");
  if (c.save_total_limit < 0) return bad("save_total_limit must be >= 0");
  if (c.eval_max_new_tokens < 1) return bad("eval_max_new_tokens must be >= 1");
  if (c.output_dir.empty()) return bad("output_dir is required");
  return absl::OkStatus();
}

std::optional<std::string> latest_checkpoint(const std::string& output_dir) {
  const auto all = checkpoints(output_dir);
  if (all.empty()) return std::nullopt;
  return all.back().second;
}

Trainer::Trainer(const model::LoadedModel& base, const ExampleBuilder& builder, std::vector<DatasetRecord> train,
                 std::vector<DatasetRecord> eval, const TrainConfig& config)
    : base_(base), builder_(builder), train_(std::move(train)), eval_(std::move(eval)), config_(config) {}

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::create(const model::LoadedModel& base,
                                                         const ExampleBuilder& builder,
                                                         std::vector<DatasetRecord> train,
                                                         std::vector<DatasetRecord> eval,
                                                         const TrainConfig& config) {
  if (auto s = validate(config); !s.ok()) return s;
  if (train.empty()) return absl::InvalidArgumentError("the training split is empty");
  std::unique_ptr<Trainer> t(new Trainer(base, builder, std::move(train), std::move(eval), config));
  std::error_code ec;
  fs::create_directories(config.output_dir, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot create ", config.output_dir, ": ", ec.message()));
  if (auto s = t->init(latest_checkpoint(config.output_dir)); !s.ok()) return s;
  return t;
}

absl::Status Trainer::init(std::optional<std::string> checkpoint) {
  const io::ModelConfig& mc = base_.configs.model;
  const at::Tensor& probe = base_.params.get("llm.model.norm.weight");
  device_ = probe.device();

  io::PeftLoraConfig lora = config_.lora;
  // tune_vision / tune_llm train the vision tower / the whole LLM (embeddings and lm_head
  // included) in full: as modules_to_save copies, so the base model keeps serving unchanged.
  const auto train_in_full = [&lora](const char* module) {
    if (std::find(lora.modules_to_save.begin(), lora.modules_to_save.end(), module) == lora.modules_to_save.end()) {
      lora.modules_to_save.push_back(module);
    }
  };
  if (config_.tune_vision) train_in_full("vpm");
  if (config_.tune_llm) train_in_full("llm");
  auto modules = model::resolve_modules_to_save(base_.params, lora.modules_to_save);
  if (!modules.ok()) return modules.status();
  if (config_.use_lora) {
    // The LoRA tensors drawn here; the module tensors below (copies, or the base's own in place).
    io::PeftLoraConfig lora_only = lora;
    lora_only.modules_to_save.clear();
    auto fresh = model::init_adapter(base_.params, mc, lora_only, config_.seed);
    if (!fresh.ok()) return fresh.status();
    adapter_ = *std::move(fresh);
  } else if (modules->empty()) {
    return absl::InvalidArgumentError("nothing to train: use_lora is false and modules_to_save is empty");
  }
  adapter_.config = lora;
  for (const std::string& name : *modules) {
    // detach(): in place, a second handle on the base's storage, so that requiring grad below
    // leaves the base's own tensor (and whatever serves from it) as it was.
    const at::Tensor& t = base_.params.get(name);
    adapter_.tensors[name] = config_.in_place ? t.detach() : t.detach().clone();
  }

  const int64_t per_step = static_cast<int64_t>(config_.batch_size) * config_.gradient_accumulation_steps;
  const int64_t total = config_.max_steps > 0
                            ? config_.max_steps
                            : std::max<int64_t>(1, static_cast<int64_t>(std::ceil(
                                  config_.num_epochs * static_cast<double>(train_.size()) / static_cast<double>(per_step))));
  schedule_ = LrSchedule{config_.schedule, config_.learning_rate,
                         warmup_steps(total, config_.warmup_ratio, config_.warmup_steps), total};

  json state;
  // In place, the checkpoint's module tensors are copied into the base's only once the whole
  // checkpoint has been read: a resume that fails leaves the base as it was.
  std::vector<std::pair<at::Tensor, at::Tensor>> into_base;
  if (checkpoint) {
    auto saved = io::read_peft_adapter(*checkpoint);
    if (!saved.ok()) return saved.status();
    for (auto& [name, t] : adapter_.tensors) {
      const auto it = saved->tensors.find(name);
      if (it == saved->tensors.end() || !it->second.sizes().equals(t.sizes())) {
        return absl::FailedPreconditionError(absl::StrCat(*checkpoint, " does not match this job's adapter (tensor ", name,
                                                          "); was the job's spec changed?"));
      }
      if (config_.in_place && std::find(modules->begin(), modules->end(), name) != modules->end()) {
        into_base.emplace_back(t, it->second);
      } else {
        t = it->second;
      }
    }
    auto text = io::read_file((fs::path(*checkpoint) / "trainer_state.json").string());
    if (!text.ok()) return text.status();
    state = json::parse(*text, nullptr, false);
    if (!state.is_object() || !state.contains("step")) {
      return absl::DataLossError(absl::StrCat(*checkpoint, "/trainer_state.json is malformed"));
    }
  }
  // Trained tensors live on the device: LoRA in float32 (as PEFT), module copies in the model's dtype.
  for (auto& [name, t] : adapter_.tensors) {
    const bool lora_tensor = name.find(".lora_") != std::string::npos;
    t = t.to(device_, lora_tensor ? at::kFloat : base_.params.get(name).scalar_type()).contiguous().detach();
    t.requires_grad_(true);
    if (config_.in_place && !lora_tensor && !t.is_alias_of(base_.params.get(name))) {
      return absl::FailedPreconditionError(absl::StrCat(
          name, " cannot be trained in place (on another device, or not contiguous); train it as a copy"));
    }
  }
  auto params = model::apply_adapter(base_.params, mc, adapter_);
  if (!params.ok()) return params.status();
  params_ = *std::move(params);
  model::RunOptions run = model::run_options(adapter_.config, /*training=*/true);
  run.gradient_checkpointing = config_.gradient_checkpointing;
  model_ = std::make_unique<model::MiniCPMO>(params_, mc, run);

  std::vector<TrainableParam> trainable;
  for (const auto& [name, t] : adapter_.tensors) trainable.push_back({name, t, decays(name)});
  optimizer_ = std::make_unique<AdamW>(std::move(trainable), config_.adam);
  const at::TensorOptions scalar = at::TensorOptions().dtype(at::kFloat).device(device_);
  loss_sum_ = at::zeros({}, scalar);
  grad_norm_ = at::zeros({}, scalar);
  lr_ = at::zeros({}, scalar);
  reached_ = std::make_shared<std::vector<char>>(optimizer_->params().size(), 0);
  if (config_.cuda_graphs && optimizer_->device_lr()) {
    graphs_ = std::make_unique<StepGraphs>(device_);
    if (!graphs_->available()) graphs_.reset();
  }
  if (graphs_ != nullptr) {
    // Gradients that persist across steps (graphs replay into them; the update zeroes them), and
    // a hook per tensor that records whether a backward pass reached it (what a fresh .grad
    // would tell).
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < optimizer_->params().size(); ++i) {
      const at::Tensor& t = optimizer_->params()[i].tensor;
      grad_buffers_.push_back(at::zeros_like(t));
      t.mutable_grad() = grad_buffers_.back();
      t.register_hook([reached = reached_, i](const at::Tensor&) { (*reached)[i] = 1; });
    }
  }

  at::Generator gen = device_generator(device_);
  std::lock_guard<std::mutex> lock(gen.mutex());
  if (!checkpoint) {
    gen.set_current_seed(config_.seed);
    return absl::OkStatus();
  }
  try {
    auto opt = io::SafetensorsCheckpoint::open((fs::path(*checkpoint) / "optimizer.safetensors").string());
    if (!opt.ok()) return opt.status();
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    for (const std::string& name : opt->names()) {
      auto t = opt->tensor(name);
      if (!t.ok()) return t.status();
      tensors.emplace_back(name, *t);
    }
    optimizer_->load_state(tensors);
    auto rng = io::SafetensorsCheckpoint::open((fs::path(*checkpoint) / "rng.safetensors").string());
    if (!rng.ok()) return rng.status();
    auto rng_state = rng->tensor("device");
    if (!rng_state.ok()) return rng_state.status();
    gen.set_state(rng_state->clone());
  } catch (const std::exception& e) {
    return absl::DataLossError(absl::StrCat(*checkpoint, ": cannot restore the optimizer or RNG: ", e.what()));
  }
  {
    at::NoGradGuard no_grad;
    for (auto& [base, saved] : into_base) base.copy_(saved);
  }
  step_ = resumed_from_ = state["step"].get<int64_t>();
  return absl::OkStatus();
}

std::vector<size_t> Trainer::micro_batch(int64_t index) const {
  const size_t n = train_.size();
  std::vector<size_t> out;
  for (int64_t k = 0; k < config_.batch_size; ++k) {
    const uint64_t sample = static_cast<uint64_t>(index) * config_.batch_size + k;
    // One shuffle per epoch; the stream of samples runs on across epochs.
    out.push_back(epoch_order(n, config_.seed, sample / n)[sample % n]);
  }
  return out;
}

std::vector<Batch> Trainer::step_batches(int64_t step) const {
  std::vector<Batch> out;
  for (int m = 0; m < config_.gradient_accumulation_steps; ++m) {
    std::vector<TrainingExample> examples;
    for (size_t i : micro_batch(step * config_.gradient_accumulation_steps + m)) {
      const DatasetRecord& r = train_[i];
      auto ex = builder_.build(r.conversation);
      if (!ex.ok()) throw BadExample(absl::StrCat("record ", r.number, ": ", ex.status().message()));
      examples.push_back(*std::move(ex));
    }
    out.push_back(collate(examples, builder_.options().model_max_length));
  }
  return out;
}

std::vector<at::Tensor*> Trainer::DeviceBatch::tensors() {
  std::vector<at::Tensor*> out = {&input_ids, &position_ids, &rows, &targets};
  for (model::MiniCPMO::ImageChunk& c : images) {
    for (at::Tensor* t : {&c.vision.pixels, &c.vision.position_ids, &c.vision.mask, &c.resampler.positions,
                          &c.resampler.mask}) {
      if (t->defined()) out.push_back(t);
    }
  }
  for (at::Tensor& t : image_positions) {
    if (t.defined()) out.push_back(&t);
  }
  return out;
}

int64_t Trainer::bucket() const {
  if (config_.shape_bucket > 0) return config_.shape_bucket;
  return graphs_ != nullptr ? 64 : 1;
}

Trainer::DeviceBatch Trainer::upload(const Batch& batch, const model::MiniCPMO& model, int64_t bucket) const {
  const auto round_up = [bucket](int64_t n) { return (n + bucket - 1) / bucket * bucket; };
  DeviceBatch out;
  const int64_t b = batch.input_ids.size(0), t = batch.input_ids.size(1), tb = round_up(t);
  std::vector<at::Tensor> pixels;
  std::vector<std::array<int64_t, 2>> sizes;
  for (size_t i = 0; i < batch.pixel_values.size(); ++i) {
    pixels.insert(pixels.end(), batch.pixel_values[i].begin(), batch.pixel_values[i].end());
    sizes.insert(sizes.end(), batch.tgt_sizes[i].begin(), batch.tgt_sizes[i].end());
    out.images_per_sample.push_back(static_cast<int64_t>(batch.pixel_values[i].size()));
    int64_t covered = 0;
    for (const auto& [start, end] : batch.image_bound[i]) covered += end - start;
    if (covered != out.images_per_sample.back() * base_.configs.model.query_num) {
      throw BadExample(absl::StrCat("sample ", i, ": its image spans cover ", covered, " tokens for ",
                                    out.images_per_sample.back(), " images"));
    }
    out.image_positions.push_back(batch.image_bound[i].empty()
                                      ? at::Tensor()
                                      : model::MiniCPMO::image_positions(batch.image_bound[i], device_));
  }
  if (!pixels.empty()) out.images = model.prepare_images(pixels, sizes, bucket);
  // Right padding past the last token changes nothing before it (the LLM is causal).
  at::Tensor ids = batch.input_ids, positions = batch.position_ids;
  if (tb > t) {
    ids = at::cat({ids, at::zeros({b, tb - t}, ids.options())}, 1);
    positions = at::cat({positions, at::zeros({b, tb - t}, positions.options())}, 1);
  }
  out.input_ids = ids.to(device_);
  out.position_ids = positions.to(device_);
  // Only labelled positions need logits: the mean over them is the recipe's loss, and the
  // [B, T, vocab] logits are never built. Found here, on the host, so the step needs no nonzero();
  // padding rows take label -100, which cross_entropy ignores.
  const at::Tensor labels = batch.labels.reshape({b, t});
  const at::Tensor flat = (labels.ne(kIgnoreIndex).nonzero() * at::tensor(std::vector<int64_t>{tb, 1})).sum(1);
  out.labelled = flat.size(0);
  const int64_t rows = round_up(std::max<int64_t>(out.labelled, 1));
  at::Tensor targets = labels.reshape({-1}).masked_select(labels.reshape({-1}).ne(kIgnoreIndex));
  out.rows = at::cat({flat, at::zeros({rows - out.labelled}, at::kLong)}).to(device_);
  out.targets = at::cat({targets, at::full({rows - out.labelled}, kIgnoreIndex, at::kLong)}).to(device_);
  out.tokens = batch.attention_mask.sum().item<int64_t>();
  out.key = absl::StrCat(b, "x", tb, ":", rows);
  for (size_t i = 0; i < batch.image_bound.size(); ++i) {
    absl::StrAppend(&out.key, "|", out.images_per_sample[i], ",",
                    out.image_positions[i].defined() ? std::to_string(out.image_positions[i].size(0)) : "-");
  }
  for (const model::MiniCPMO::ImageChunk& c : out.images) {
    absl::StrAppend(&out.key, "|", c.vision.pixels.size(0), "x", c.vision.position_ids.size(1),
                    c.vision.mask.defined() ? "m" : "", c.resampler.mask.defined() ? "m" : "");
  }
  return out;
}

at::Tensor Trainer::batch_loss(const DeviceBatch& batch, const model::MiniCPMO& model) const {
  // [N strips, query_num, hidden]; each sample's rows are its own strips, in order.
  const at::Tensor features = batch.images.empty() ? at::Tensor() : model.encode_prepared(batch.images);
  std::vector<at::Tensor> embeds;
  int64_t offset = 0;
  for (size_t i = 0; i < batch.images_per_sample.size(); ++i) {
    const int64_t n = batch.images_per_sample[i];
    embeds.push_back(model.prompt_embeddings(batch.input_ids[static_cast<int64_t>(i)], batch.image_positions[i],
                                             n > 0 ? features.narrow(0, offset, n) : at::Tensor()));
    offset += n;
  }
  // The recipe runs the LLM without an attention mask: right padding only follows real tokens.
  const at::Tensor hidden = model.llm().hidden_states(at::cat(embeds, 0), batch.position_ids);
  const at::Tensor logits = model.llm().logits(hidden.reshape({-1, hidden.size(-1)}).index_select(0, batch.rows));
  return at::cross_entropy_loss(logits.to(at::kFloat), batch.targets);
}

void Trainer::accumulate(const DeviceBatch& batch, double n) const {
  const at::Tensor loss = batch_loss(batch, *model_);
  (loss / n).backward();
  at::NoGradGuard no_grad;
  loss_sum_.add_(loss.detach());
}

void Trainer::clip_gradients(const std::vector<at::Tensor>& grads) const {
  at::NoGradGuard no_grad;
  if (grads.empty()) {
    grad_norm_.zero_();
    return;
  }
  std::vector<at::Tensor> norms = at::_foreach_norm(grads, 2);
  for (at::Tensor& n : norms) n = n.to(at::kFloat);
  const at::Tensor total = at::stack(norms).norm();
  grad_norm_.copy_(total);
  if (config_.max_grad_norm <= 0) return;
  // torch.nn.utils.clip_grad_norm_: scale by min(1, max_norm / (norm + 1e-6)); by exactly 1 is a
  // no-op, so there is no branch on the host.
  const at::Tensor coef = (config_.max_grad_norm / (total + 1e-6)).clamp_max(1.0);
#if CPM_TORCH_VERSION_AT_LEAST(2, 1)
  at::_foreach_mul_(grads, coef);
#else
  at::_foreach_mul_(grads, coef.item<double>());
#endif
}

void Trainer::eager_step(std::vector<DeviceBatch>& batches, StepReport& r) {
  const double n = static_cast<double>(batches.size());
  const std::vector<TrainableParam>& params = optimizer_->params();
  std::vector<char> reached(params.size(), 0);
  // Without persistent buffers, fresh gradients: a parameter the step does not reach has none.
  if (grad_buffers_.empty()) {
    for (const TrainableParam& p : params) p.tensor.mutable_grad() = at::Tensor();
  }
  loss_sum_.zero_();
  for (DeviceBatch& batch : batches) {
    std::fill(reached_->begin(), reached_->end(), 0);
    accumulate(batch, n);
    bool all = true;
    for (size_t i = 0; i < params.size(); ++i) {
      const bool got = grad_buffers_.empty() ? params[i].tensor.grad().defined() : (*reached_)[i] != 0;
      reached[i] = reached[i] || got;
      all = all && got;
    }
    // A micro-batch that reaches every trained tensor can replay the update graph, which steps them all.
    if (all && graphs_ != nullptr) graphable_.insert(batch.key);
  }
  // torch skips parameters the step did not reach (no .grad); so does AdamW here.
  std::vector<at::Tensor> grads;
  for (size_t i = 0; i < params.size(); ++i) {
    if (!reached[i]) params[i].tensor.mutable_grad() = at::Tensor();
    if (reached[i]) grads.push_back(params[i].tensor.grad());
  }
  clip_gradients(grads);
  optimizer_->step(r.learning_rate);
  if (grad_buffers_.empty()) {
    for (const TrainableParam& p : params) p.tensor.mutable_grad() = at::Tensor();
    return;
  }
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < params.size(); ++i) {
    grad_buffers_[i].zero_();
    params[i].tensor.mutable_grad() = grad_buffers_[i];
  }
}

void Trainer::graph_step(std::vector<DeviceBatch>& batches, StepReport& r) {
  const double n = static_cast<double>(batches.size());
  loss_sum_.zero_();
  for (DeviceBatch& batch : batches) {
    auto it = std::find_if(slots_.begin(), slots_.end(), [&](const GraphSlot& s) { return s.inputs.key == batch.key; });
    if (it == slots_.end()) {
      if (slots_.size() >= 8) slots_.erase(slots_.begin());
      slots_.push_back({std::move(batch), nullptr});
      GraphSlot& slot = slots_.back();
      try {
        slot.graph = capture(*graphs_, [&] { accumulate(slot.inputs, n); });
      } catch (const CaptureFailed&) {
        slots_.pop_back();
        throw;
      }
    } else {
      std::rotate(it, it + 1, slots_.end());
      const std::vector<at::Tensor*> to = slots_.back().inputs.tensors(), from = batch.tensors();
      if (to.size() != from.size()) throw std::logic_error("a batch does not match the graph of its key " + batch.key);
      for (size_t k = 0; k < to.size(); ++k) {
        if (!to[k]->sizes().equals(from[k]->sizes())) {
          throw std::logic_error("a batch does not match the graph of its key " + batch.key);
        }
        to[k]->copy_(*from[k]);
      }
    }
    slots_.back().graph->replay();
  }
  lr_.fill_(r.learning_rate);
  if (update_graph_ == nullptr) {
    update_graph_ = capture(*graphs_, [&] {
      clip_gradients(grad_buffers_);
      optimizer_->step_on_device(lr_);
      at::NoGradGuard no_grad;
      for (at::Tensor& g : grad_buffers_) g.zero_();
    });
  }
  update_graph_->replay();
  optimizer_->count_step();
  r.cuda_graph = true;
}

absl::StatusOr<StepReport> Trainer::step() {
  if (done()) return absl::FailedPreconditionError("training is already done");
  std::vector<Batch> batches;
  try {
    batches = prefetched_step_ == step_ ? prefetched_.get() : step_batches(step_);
  } catch (const std::exception& e) {
    prefetched_step_ = -1;
    return from_exception(e);
  }
  prefetched_step_ = -1;
  if (step_ + 1 < schedule_.total_steps) {
    prefetched_step_ = step_ + 1;
    prefetched_ = std::async(std::launch::async, [this, next = step_ + 1] { return step_batches(next); });
  }
  return step(batches);
}

absl::StatusOr<StepReport> Trainer::step(const std::vector<Batch>& micro_batches) {
  if (done()) return absl::FailedPreconditionError("training is already done");
  if (micro_batches.empty()) return absl::InvalidArgumentError("a step needs at least one micro-batch");
  const auto start = std::chrono::steady_clock::now();
  StepReport r;
  r.learning_rate = schedule_.at(step_);
  const auto upload_all = [&] {
    std::vector<DeviceBatch> out;
    for (const Batch& b : micro_batches) {
      out.push_back(upload(b, *model_, bucket()));
      // A graph scales its gradients by 1 / (micro-batches in the step).
      out.back().key = absl::StrCat(micro_batches.size(), "/", out.back().key);
    }
    return out;
  };
  try {
    std::vector<DeviceBatch> batches = upload_all();
    bool graphed = graphs_ != nullptr;
    for (const DeviceBatch& b : batches) {
      graphed = graphed && graphable_.count(b.key) > 0;
      r.tokens += b.tokens;
    }
    if (graphs_ == nullptr) {
      eager_step(batches, r);
    } else {
      bool capture_failed = false;
      graphs_->on_stream([&] {
        if (!graphed) return eager_step(batches, r);
        try {
          graph_step(batches, r);
        } catch (const CaptureFailed& e) {
          // A failed capture can leave LibTorch's allocator unable to capture into the same pool
          // again: graphs stay off for the rest of this run. Earlier micro-batches of this step may
          // have replayed: the step starts over, eagerly, on batches uploaded again.
          const std::string what = e.what();
          log_warn("a training step could not be captured as a CUDA graph; this run continues without graphs",
                   {{"error", what.substr(0, what.find('\n'))}});
          capture_failed = true;
          at::NoGradGuard no_grad;
          for (at::Tensor& g : grad_buffers_) g.zero_();
          batches = upload_all();
          eager_step(batches, r);
        }
      });
      if (capture_failed) {
        slots_.clear();
        update_graph_.reset();
        graphs_.reset();
      }
    }
    // The one wait for the device in a step: its loss and gradient norm.
    const at::Tensor results = at::stack({loss_sum_, grad_norm_}).cpu();
    r.loss = results[0].item<double>() / static_cast<double>(micro_batches.size());
    r.grad_norm = results[1].item<double>();
  } catch (const std::exception& e) {
    // Nothing of a failed step stays behind: its gradients are cleared (the persistent buffers
    // zeroed), the weights and the optimizer are as before it (the update runs last).
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < optimizer_->params().size(); ++i) {
      optimizer_->params()[i].tensor.mutable_grad() = grad_buffers_.empty() ? at::Tensor() : grad_buffers_[i].zero_();
    }
    return from_exception(e);
  }
  ++step_;
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  run_seconds_ += seconds;
  run_tokens_ += r.tokens;
  r.step = step_;
  r.total_steps = schedule_.total_steps;
  r.step_seconds = seconds;
  r.elapsed_seconds = run_seconds_;
  r.tokens_per_second = run_seconds_ > 0 ? static_cast<double>(run_tokens_) / run_seconds_ : 0;
  const int64_t run_steps = step_ - resumed_from_;
  r.eta_seconds = run_seconds_ / static_cast<double>(run_steps) * static_cast<double>(schedule_.total_steps - step_);
  if (device_.is_cuda()) r.gpu_memory_bytes = cuda_memory(device_.index()).allocated_bytes;
  return r;
}

absl::StatusOr<EvalReport> Trainer::evaluate() {
  EvalProgress progress;
  if (auto s = evaluate_some(progress, eval_.size()); !s.ok()) return s;
  return finish_evaluation(std::move(progress));
}

absl::Status Trainer::evaluate_some(EvalProgress& progress, size_t count) {
  const size_t end = std::min(eval_.size(), progress.next + count);
  if (progress.next >= end) return absl::OkStatus();
  at::NoGradGuard no_grad;
  const model::MiniCPMO model(params_, base_.configs.model, model::run_options(adapter_.config, /*training=*/false));
  const io::Tokenizer& tok = *base_.tokenizer;
  serve::GreedyOptions greedy;
  greedy.max_new_tokens = config_.eval_max_new_tokens;
  for (const char* stop : {"<|im_end|>", "<|endoftext|>"}) {
    if (const auto id = tok.token_to_id(stop)) greedy.stop_ids.push_back(*id);
  }
  const int32_t im_end = tok.token_to_id("<|im_end|>").value_or(-1);
  try {
    for (; progress.next < end; ++progress.next) {
      const DatasetRecord& record = eval_[progress.next];
      auto ex = builder_.build(record.conversation);
      if (!ex.ok()) throw BadExample(absl::StrCat("record ", record.number, ": ", ex.status().message()));
      const DeviceBatch batch =
          upload(collate(std::span<const TrainingExample>(&*ex, 1), builder_.options().model_max_length), model, 1);
      progress.loss_sum += batch_loss(batch, model).item<double>() * static_cast<double>(batch.labelled);
      progress.labelled += batch.labelled;
      // The prompt is everything up to the last answer's "assistant\n"; the reference is that
      // answer's text (the labelled span without its <|im_end|>).
      int64_t first = -1;
      for (int64_t i = static_cast<int64_t>(ex->labels.size()) - 1; i >= 0; --i) {
        if (ex->labels[i] != kIgnoreIndex && (i == 0 || ex->labels[i - 1] == kIgnoreIndex)) {
          first = i;
          break;
        }
      }
      const int64_t answer_begin = first + 2;  // after "assistant" and "\n"
      int64_t answer_end = answer_begin;
      while (answer_end < static_cast<int64_t>(ex->input_ids.size()) && ex->input_ids[answer_end] != im_end) ++answer_end;
      auto reference = tok.decode(std::span<const int32_t>(ex->input_ids).subspan(answer_begin, answer_end - answer_begin));
      if (!reference.ok()) return reference.status();

      std::vector<std::pair<int64_t, int64_t>> bounds;
      for (const auto& b2 : ex->image_bound) {
        if (b2.second <= answer_begin) bounds.push_back(b2);
      }
      std::vector<at::Tensor> pixels;
      const c10::ScalarType dtype = base_.params.get("vpm.embeddings.patch_embedding.weight").scalar_type();
      for (const at::Tensor& p : ex->pixel_values) pixels.push_back(p.to(device_, dtype));
      const std::vector<std::array<int64_t, 2>> sizes(ex->tgt_sizes.begin(), ex->tgt_sizes.begin() + bounds.size());
      pixels.resize(bounds.size());
      const at::Tensor features = pixels.empty() ? at::Tensor() : model.encode_images(pixels, sizes);
      const at::Tensor ids = at::tensor(std::vector<int64_t>(ex->input_ids.begin(), ex->input_ids.begin() + answer_begin))
                                 .to(device_);
      const serve::Generation g =
          serve::generate_greedy(model.llm(), model.prompt_embeddings(ids, bounds, features), greedy);
      auto text = serve::answer_text(tok, g);
      if (!text.ok()) return text.status();
      progress.references.push_back(*std::move(reference));
      progress.predictions.push_back(*std::move(text));
    }
  } catch (const std::exception& e) {
    return from_exception(e);
  }
  return absl::OkStatus();
}

absl::StatusOr<EvalReport> Trainer::finish_evaluation(EvalProgress progress) const {
  EvalReport report;
  report.step = step_;
  if (progress.predictions.empty()) return report;
  report.loss = progress.labelled > 0 ? progress.loss_sum / static_cast<double>(progress.labelled) : 0;
  auto metrics = latex_metrics(progress.predictions, progress.references);
  if (!metrics.ok()) return metrics.status();
  report.metrics = *metrics;
  report.predictions = std::move(progress.predictions);
  return report;
}

io::PeftAdapter Trainer::adapter() const {
  io::PeftAdapter out;
  out.config = adapter_.config;
  for (const auto& [name, t] : adapter_.tensors) out.tensors[name] = t.detach().cpu().clone();
  return out;
}

bool Trainer::checkpoint_due() const {
  return step_ > 0 && (done() || (config_.save_steps > 0 && step_ % config_.save_steps == 0));
}

bool Trainer::eval_due() const {
  return step_ > 0 && (done() || (config_.eval_steps > 0 && step_ % config_.eval_steps == 0));
}

absl::Status Trainer::save_checkpoint() {
  const std::string dir = (fs::path(config_.output_dir) / checkpoint_name(step_)).string();
  std::error_code ec;
  if (fs::exists(dir, ec)) return absl::OkStatus();  // this step is already saved
  auto staged = io::staging_directory(dir);
  if (!staged.ok()) return staged.status();
  const auto cleanup = [&] { fs::remove_all(*staged, ec); };
  // The adapter files, so any checkpoint also loads as a PEFT adapter.
  const io::PeftAdapter a = adapter();
  const std::string adapter_dir = (fs::path(*staged) / "adapter").string();
  absl::Status s = io::write_peft_adapter(adapter_dir, a);
  for (const char* f : {"adapter_config.json", "adapter_model.safetensors"}) {
    if (s.ok() && ::rename((fs::path(adapter_dir) / f).c_str(), (fs::path(*staged) / f).c_str()) != 0) {
      s = absl::UnavailableError(absl::StrCat("cannot move ", f, " into ", *staged));
    }
  }
  fs::remove(adapter_dir, ec);
  if (s.ok()) {
    std::vector<std::pair<std::string, at::Tensor>> state;
    for (const auto& [name, t] : optimizer_->state()) state.emplace_back(name, t.detach().cpu());
    s = io::write_safetensors((fs::path(*staged) / "optimizer.safetensors").string(), state);
  }
  if (s.ok()) {
    at::Generator gen = device_generator(device_);
    at::Tensor rng;
    {
      std::lock_guard<std::mutex> lock(gen.mutex());
      rng = gen.get_state();
    }
    s = io::write_safetensors((fs::path(*staged) / "rng.safetensors").string(), {{"device", rng.cpu()}});
  }
  if (s.ok()) {
    const json state = {{"step", step_},
                        {"total_steps", schedule_.total_steps},
                        {"seed", config_.seed},
                        {"train_records", train_.size()},
                        {"batch_size", config_.batch_size},
                        {"gradient_accumulation_steps", config_.gradient_accumulation_steps}};
    s = io::write_file_atomic((fs::path(*staged) / "trainer_state.json").string(), state.dump(2) + "\n");
  }
  if (s.ok()) s = io::publish_directory(*staged, dir);
  if (!s.ok()) {
    cleanup();
    return s;
  }
  if (config_.save_total_limit > 0) {
    const auto all = checkpoints(config_.output_dir);
    for (size_t i = 0; i + config_.save_total_limit < all.size(); ++i) fs::remove_all(all[i].second, ec);
  }
  return absl::OkStatus();
}

}  // namespace cpm::core::train
