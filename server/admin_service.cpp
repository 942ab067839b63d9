// SPDX-License-Identifier: Apache-2.0
#include "admin_service.h"

#include <grpcpp/grpcpp.h>

#include "common/build_info.h"
#include "common/device.h"
#include "common/guard.h"
#include "process_metrics.h"
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

  cpm::v1::ModelInfo* model = response->mutable_model();
  if (facts_.config.model.empty()) {
    model->set_state(cpm::v1::MODEL_STATE_NONE);
  } else {
    // Weight loading arrives with the LibTorch model (issue #4); until then say so plainly.
    model->set_state(cpm::v1::MODEL_STATE_FAILED);
    model->set_path(facts_.config.model);
    model->set_error("this build of cpmd does not load model weights yet");
  }

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
  for (const std::string& s : facts_.unimplemented_services) status->add_unimplemented_services(s);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace cpm::server
