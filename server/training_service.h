// SPDX-License-Identifier: Apache-2.0
//
// cpm.v1.Training over gRPC: validates requests and hands them to the JobManager and the dataset
// uploads. Synchronous handlers: WatchJob and UploadDataset block their thread for the life of
// the stream, which keeps their code straight-line; the other services use the callback API.
#pragma once

#include "cpm/v1/training.grpc.pb.h"

namespace cpm::server {

class DatasetUploads;
class JobManager;

class TrainingService final : public cpm::v1::Training::Service {
 public:
  TrainingService(JobManager& jobs, DatasetUploads& uploads) : jobs_(jobs), uploads_(uploads) {}

  grpc::Status SubmitJob(grpc::ServerContext* context, const cpm::v1::SubmitJobRequest* request,
                         cpm::v1::Job* response) override;
  grpc::Status GetJob(grpc::ServerContext* context, const cpm::v1::GetJobRequest* request,
                      cpm::v1::Job* response) override;
  grpc::Status ListJobs(grpc::ServerContext* context, const cpm::v1::ListJobsRequest* request,
                        cpm::v1::ListJobsResponse* response) override;
  grpc::Status CancelJob(grpc::ServerContext* context, const cpm::v1::CancelJobRequest* request,
                         cpm::v1::Job* response) override;
  grpc::Status WatchJob(grpc::ServerContext* context, const cpm::v1::WatchJobRequest* request,
                        grpc::ServerWriter<cpm::v1::JobEvent>* writer) override;
  grpc::Status UploadDataset(grpc::ServerContext* context,
                             grpc::ServerReader<cpm::v1::UploadDatasetRequest>* reader,
                             cpm::v1::Dataset* response) override;
  grpc::Status ListDatasets(grpc::ServerContext* context, const cpm::v1::ListDatasetsRequest* request,
                            cpm::v1::ListDatasetsResponse* response) override;

 private:
  JobManager& jobs_;
  DatasetUploads& uploads_;
};

}  // namespace cpm::server
