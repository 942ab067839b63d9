// SPDX-License-Identifier: Apache-2.0
//
// The cpm.v1 service this build does not implement yet (Training). They are registered (so reflection lists
// the whole API and clients can be written against it) and answer every call with UNIMPLEMENTED and
// a message that says so, instead of gRPC's bare "unknown method".
#pragma once

#include "cpm/v1/training.grpc.pb.h"

namespace cpm::server {

class UnimplementedTraining final : public cpm::v1::Training::CallbackService {
 public:
  grpc::ServerUnaryReactor* SubmitJob(grpc::CallbackServerContext* context,
                                      const cpm::v1::SubmitJobRequest*, cpm::v1::Job*) override;
  grpc::ServerUnaryReactor* GetJob(grpc::CallbackServerContext* context,
                                   const cpm::v1::GetJobRequest*, cpm::v1::Job*) override;
  grpc::ServerUnaryReactor* ListJobs(grpc::CallbackServerContext* context,
                                     const cpm::v1::ListJobsRequest*,
                                     cpm::v1::ListJobsResponse*) override;
  grpc::ServerUnaryReactor* CancelJob(grpc::CallbackServerContext* context,
                                      const cpm::v1::CancelJobRequest*, cpm::v1::Job*) override;
  grpc::ServerWriteReactor<cpm::v1::JobEvent>* WatchJob(grpc::CallbackServerContext* context,
                                                        const cpm::v1::WatchJobRequest*) override;
  grpc::ServerReadReactor<cpm::v1::UploadDatasetRequest>* UploadDataset(
      grpc::CallbackServerContext* context, cpm::v1::Dataset*) override;
  grpc::ServerUnaryReactor* ListDatasets(grpc::CallbackServerContext* context,
                                         const cpm::v1::ListDatasetsRequest*,
                                         cpm::v1::ListDatasetsResponse*) override;
};

}  // namespace cpm::server
