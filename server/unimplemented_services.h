// SPDX-License-Identifier: Apache-2.0
//
// The cpm.v1 services this build does not implement yet. They are registered (so reflection lists
// the whole API and clients can be written against it) and answer every call with UNIMPLEMENTED and
// a message that says so, instead of gRPC's bare "unknown method".
#pragma once

#include "cpm/v1/adapters.grpc.pb.h"
#include "cpm/v1/ocr.grpc.pb.h"
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

class UnimplementedAdapters final : public cpm::v1::Adapters::CallbackService {
 public:
  grpc::ServerUnaryReactor* LoadAdapter(grpc::CallbackServerContext* context,
                                        const cpm::v1::LoadAdapterRequest*,
                                        cpm::v1::Adapter*) override;
  grpc::ServerUnaryReactor* UnloadAdapter(grpc::CallbackServerContext* context,
                                          const cpm::v1::UnloadAdapterRequest*,
                                          cpm::v1::Adapter*) override;
  grpc::ServerUnaryReactor* ListAdapters(grpc::CallbackServerContext* context,
                                         const cpm::v1::ListAdaptersRequest*,
                                         cpm::v1::ListAdaptersResponse*) override;
  grpc::ServerUnaryReactor* GetAdapter(grpc::CallbackServerContext* context,
                                       const cpm::v1::GetAdapterRequest*,
                                       cpm::v1::Adapter*) override;
  grpc::ServerWriteReactor<cpm::v1::ExportAdapterResponse>* ExportAdapter(
      grpc::CallbackServerContext* context, const cpm::v1::ExportAdapterRequest*) override;
};

class UnimplementedOcr final : public cpm::v1::Ocr::CallbackService {
 public:
  grpc::ServerUnaryReactor* Recognize(grpc::CallbackServerContext* context,
                                      const cpm::v1::RecognizeRequest*,
                                      cpm::v1::RecognizeResponse*) override;
  grpc::ServerWriteReactor<cpm::v1::RecognizeStreamResponse>* RecognizeStream(
      grpc::CallbackServerContext* context, const cpm::v1::RecognizeRequest*) override;
};

}  // namespace cpm::server
