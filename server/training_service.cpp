// SPDX-License-Identifier: Apache-2.0
#include "training_service.h"

#include "dataset_upload.h"
#include "job_manager.h"
#include "status_conversion.h"

namespace cpm::server {
namespace {

// Copies a result into the response, or turns its error into the call's status.
template <typename T>
grpc::Status answer(absl::StatusOr<T> result, T* response) {
  if (!result.ok()) return to_grpc_status(result.status());
  *response = *std::move(result);
  return grpc::Status::OK;
}

}  // namespace

grpc::Status TrainingService::SubmitJob(grpc::ServerContext*, const cpm::v1::SubmitJobRequest* request,
                                        cpm::v1::Job* response) {
  return answer(jobs_.submit(*request), response);
}

grpc::Status TrainingService::GetJob(grpc::ServerContext*, const cpm::v1::GetJobRequest* request,
                                     cpm::v1::Job* response) {
  return answer(jobs_.get(request->id()), response);
}

grpc::Status TrainingService::ListJobs(grpc::ServerContext*, const cpm::v1::ListJobsRequest* request,
                                       cpm::v1::ListJobsResponse* response) {
  return answer(jobs_.list(*request), response);
}

grpc::Status TrainingService::CancelJob(grpc::ServerContext*, const cpm::v1::CancelJobRequest* request,
                                        cpm::v1::Job* response) {
  return answer(jobs_.cancel(request->id()), response);
}

grpc::Status TrainingService::WatchJob(grpc::ServerContext* context, const cpm::v1::WatchJobRequest* request,
                                       grpc::ServerWriter<cpm::v1::JobEvent>* writer) {
  return to_grpc_status(jobs_.watch(
      *request, [writer](const cpm::v1::JobEvent& e) { return writer->Write(e); },
      [context] { return context->IsCancelled(); }));
}

grpc::Status TrainingService::UploadDataset(grpc::ServerContext* context,
                                            grpc::ServerReader<cpm::v1::UploadDatasetRequest>* reader,
                                            cpm::v1::Dataset* response) {
  return answer(uploads_.receive([reader](cpm::v1::UploadDatasetRequest& m) { return reader->Read(&m); },
                                 [context] { return context->IsCancelled(); }),
                response);
}

grpc::Status TrainingService::ListDatasets(grpc::ServerContext*, const cpm::v1::ListDatasetsRequest* request,
                                           cpm::v1::ListDatasetsResponse* response) {
  return answer(uploads_.list(*request), response);
}

}  // namespace cpm::server
