// SPDX-License-Identifier: Apache-2.0
#pragma once

#include "cpm/v1/ocr.grpc.pb.h"

namespace cpm::server {

class ModelHost;
class ServingMetrics;

// cpm.v1.Ocr on the engine: each call becomes one engine request carrying the call's deadline and
// a cancellation token that the reactor's OnCancel fires; the answer comes back on an engine or
// worker thread and finishes the call there. Nothing here blocks a gRPC thread. Thread-safe; the
// host and metrics must outlive the gRPC server.
class OcrService final : public cpm::v1::Ocr::CallbackService {
 public:
  OcrService(const ModelHost& host, ServingMetrics& metrics) : host_(host), metrics_(metrics) {}

  grpc::ServerUnaryReactor* Recognize(grpc::CallbackServerContext* context,
                                      const cpm::v1::RecognizeRequest* request,
                                      cpm::v1::RecognizeResponse* response) override;
  grpc::ServerWriteReactor<cpm::v1::RecognizeStreamResponse>* RecognizeStream(
      grpc::CallbackServerContext* context, const cpm::v1::RecognizeRequest* request) override;

 private:
  const ModelHost& host_;
  ServingMetrics& metrics_;
};

}  // namespace cpm::server
