// SPDX-License-Identifier: Apache-2.0
#include "admin_service.h"

#include <grpcpp/grpcpp.h>

#include "common/build_info.h"
#include "common/device.h"
#include "common/guard.h"
#include "model_host.h"
#include "process_metrics.h"
#include "runtime/engine_metrics.h"
#include "status_conversion.h"

namespace cpm::server {
namespace {

void fill_build(cpm::v1::BuildInfo* out) {
  const core::BuildInfo& b = core::build_info();
  out->set_version(b.version);
  out->set_git_commit(b.git_commit);
  out->set_torch_version(b.torch_version);
  out->set_grpc_version(grpc::Version());
  out->set_cuda(b.cuda);
  out->set_image_decoder(b.image_decoder);
}

void fill_device(const core::DeviceInfo& d, cpm::v1::DeviceInfo* out) {
  out->set_type(d.type);
  out->set_index(d.index);
  out->set_name(d.name);
  out->set_compute_capability(d.compute_capability);
  out->set_memory_total_bytes(d.memory_total_bytes);
  out->set_memory_free_bytes(d.memory_free_bytes);
  out->set_memory_allocated_bytes(d.memory_allocated_bytes);
  out->set_memory_reserved_bytes(d.memory_reserved_bytes);
  out->set_cores(d.cores);
}

cpm::v1::ModelState to_proto(ModelState state) {
  switch (state) {
    case ModelState::kNone:
      return cpm::v1::MODEL_STATE_NONE;
    case ModelState::kLoading:
      return cpm::v1::MODEL_STATE_LOADING;
    case ModelState::kReady:
      return cpm::v1::MODEL_STATE_READY;
    case ModelState::kFailed:
      return cpm::v1::MODEL_STATE_FAILED;
  }
  return cpm::v1::MODEL_STATE_UNSPECIFIED;
}

// The architecture comes from the checkpoint's config.json, read at start-up; the state, device
// and dtype from the loader.
void fill_model(const ServerFacts& facts, const ModelStatus& status, cpm::v1::ModelInfo* out) {
  out->set_state(to_proto(status.state));
  if (!facts.model_configs) return;
  const core::io::ModelConfig& m = facts.model_configs->model;
  out->set_error(status.error);
  out->set_path(facts.config.model);
  out->set_architecture(m.architectures.empty() ? "" : m.architectures.front());
  out->set_model_type(m.model_type);
  out->set_dtype(status.dtype);
  out->set_device(status.device);
  out->set_num_parameters(status.num_parameters);
  cpm::v1::LlmArchitecture* llm = out->mutable_llm();
  llm->set_hidden_size(m.hidden_size);
  llm->set_intermediate_size(m.intermediate_size);
  llm->set_num_hidden_layers(m.num_hidden_layers);
  llm->set_num_attention_heads(m.num_attention_heads);
  llm->set_num_key_value_heads(m.num_key_value_heads);
  llm->set_head_dim(m.head_dim());
  llm->set_vocab_size(m.vocab_size);
  llm->set_rope_theta(m.rope_theta);
  llm->set_rms_norm_eps(m.rms_norm_eps);
  llm->set_max_position_embeddings(m.max_position_embeddings);
  llm->set_tie_word_embeddings(m.tie_word_embeddings);
  cpm::v1::VisionArchitecture* vision = out->mutable_vision();
  vision->set_hidden_size(m.vision.hidden_size);
  vision->set_intermediate_size(m.vision.intermediate_size);
  vision->set_num_hidden_layers(m.vision_layers_used());
  vision->set_num_attention_heads(m.vision.num_attention_heads);
  vision->set_patch_size(m.vision.patch_size);
  vision->set_image_size(m.vision.image_size);
  cpm::v1::ResamplerArchitecture* resampler = out->mutable_resampler();
  resampler->set_query_num(m.query_num);
  resampler->set_embed_dim(m.hidden_size);
  resampler->set_num_heads(m.resampler_heads());
  resampler->set_kv_dim(m.vision.hidden_size);
  const core::io::PreprocessorConfig& p = facts.model_configs->preprocessor;
  cpm::v1::SlicingConfig* slicing = out->mutable_slicing();
  slicing->set_scale_resolution(p.scale_resolution);
  slicing->set_max_slice_nums(p.max_slice_nums);
  slicing->set_patch_size(p.patch_size);
  slicing->set_slice_mode(p.slice_mode);
  slicing->set_use_image_id(p.use_image_id);
}

}  // namespace

void AdminService::set_grpc_address(std::string address) {
  std::lock_guard<std::mutex> lock(mu_);
  grpc_address_ = std::move(address);
}

grpc::ServerUnaryReactor* AdminService::GetInfo(grpc::CallbackServerContext* context,
                                                const cpm::v1::GetInfoRequest*,
                                                cpm::v1::ServerInfo* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  fill_build(response->mutable_build());

  fill_model(facts_, host_.status(), response->mutable_model());

  const absl::Status devices = core::guarded("listing devices", [&] {
    for (const core::DeviceInfo& d : core::list_devices()) fill_device(d, response->add_devices());
    return absl::OkStatus();
  });
  if (!devices.ok()) {
    reactor->Finish(to_grpc_status(devices));
    return reactor;
  }

  cpm::v1::ServerStatus* status = response->mutable_status();
  const auto start_s = std::chrono::duration_cast<std::chrono::seconds>(
      facts_.start_time.time_since_epoch());
  status->mutable_start_time()->set_seconds(start_s.count());
  const auto uptime = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::system_clock::now() - facts_.start_time);
  status->mutable_uptime()->set_seconds(uptime.count() / 1000);
  status->mutable_uptime()->set_nanos(static_cast<int32_t>(uptime.count() % 1000) * 1000000);
  {
    std::lock_guard<std::mutex> lock(mu_);
    status->set_grpc_address(grpc_address_);
  }
  status->set_metrics_address(facts_.metrics_address);
  status->set_data_dir(facts_.config.data_dir);
  status->set_resident_memory_bytes(read_process_stats().resident_bytes);
  if (const std::optional<core::runtime::EngineStats> stats = host_.stats()) {
    status->set_ocr_queue_depth(static_cast<int32_t>(stats->preparing + stats->queued));
    status->set_ocr_running(static_cast<int32_t>(stats->running));
    status->set_loaded_adapters(static_cast<int32_t>(stats->adapters_loaded));
  }
  for (const std::string& s : facts_.unimplemented_services) status->add_unimplemented_services(s);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace cpm::server
