// SPDX-License-Identifier: Apache-2.0
#include "unimplemented_services.h"

#include <string>

#include "common/build_info.h"

namespace cpm::server {
namespace {

grpc::Status unimplemented(const char* service, const char* method) {
  return grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                      std::string("cpm.v1.") + service + "/" + method +
                          " is not implemented in cpmd " + core::build_info().version +
                          " yet; this build serves cpm.v1.Ocr, cpm.v1.Adapters, cpm.v1.Admin, "
                          "grpc.health.v1.Health and server reflection");
}

grpc::ServerUnaryReactor* reject(grpc::CallbackServerContext* context, const char* service,
                                 const char* method) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(unimplemented(service, method));
  return reactor;
}

// Stream reactors that finish at once; they delete themselves when gRPC is done with them.
template <typename Response>
class RejectedWriter final : public grpc::ServerWriteReactor<Response> {
 public:
  explicit RejectedWriter(grpc::Status status) { this->Finish(std::move(status)); }
  void OnDone() override { delete this; }
};

template <typename Request>
class RejectedReader final : public grpc::ServerReadReactor<Request> {
 public:
  explicit RejectedReader(grpc::Status status) { this->Finish(std::move(status)); }
  void OnDone() override { delete this; }
};

}  // namespace

#define CPM_REJECT_UNARY(Class, Service, Method, Request, Response)                        \
  grpc::ServerUnaryReactor* Class::Method(grpc::CallbackServerContext* context,            \
                                          const cpm::v1::Request*, cpm::v1::Response*) {   \
    return reject(context, Service, #Method);                                              \
  }

CPM_REJECT_UNARY(UnimplementedTraining, "Training", SubmitJob, SubmitJobRequest, Job)
CPM_REJECT_UNARY(UnimplementedTraining, "Training", GetJob, GetJobRequest, Job)
CPM_REJECT_UNARY(UnimplementedTraining, "Training", ListJobs, ListJobsRequest, ListJobsResponse)
CPM_REJECT_UNARY(UnimplementedTraining, "Training", CancelJob, CancelJobRequest, Job)
CPM_REJECT_UNARY(UnimplementedTraining, "Training", ListDatasets, ListDatasetsRequest,
                 ListDatasetsResponse)
#undef CPM_REJECT_UNARY

grpc::ServerWriteReactor<cpm::v1::JobEvent>* UnimplementedTraining::WatchJob(
    grpc::CallbackServerContext*, const cpm::v1::WatchJobRequest*) {
  return new RejectedWriter<cpm::v1::JobEvent>(unimplemented("Training", "WatchJob"));
}

grpc::ServerReadReactor<cpm::v1::UploadDatasetRequest>* UnimplementedTraining::UploadDataset(
    grpc::CallbackServerContext*, cpm::v1::Dataset*) {
  return new RejectedReader<cpm::v1::UploadDatasetRequest>(
      unimplemented("Training", "UploadDataset"));
}

}  // namespace cpm::server
