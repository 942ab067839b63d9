// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <grpcpp/support/server_interceptor.h>

#include <memory>
#include <string_view>

#include "metrics.h"

namespace cpm::server {

// Counts every gRPC call the server handles, as go-grpc-prometheus names them, so stock gRPC
// dashboards work: grpc_server_started_total, grpc_server_handled_total (with grpc_code) and the
// grpc_server_handling_seconds histogram, labelled by grpc_type, grpc_service and grpc_method.
class GrpcMetricsInterceptorFactory
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit GrpcMetricsInterceptorFactory(Registry& registry);
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override;

  struct Families {
    Family<Counter>* started;
    Family<Counter>* handled;
    Family<Histogram>* seconds;
  };
  // Into the registry, which outlives the server; copies stay valid as long as it does.
  const Families& families() const { return families_; }

 private:
  Families families_;
};

// Counts a call that the auth processor refused (server/grpc_security.h): such a call ends in
// gRPC's core before any interceptor exists, so it is recorded here with the interceptor's labels:
// started, handled with `code`, and a handling time of 0. `method` is the full name
// ("/cpm.v1.Ocr/Recognize"); one that no service of this process defines is counted as service
// and method "unknown", so that callers without a token cannot mint label values.
void record_refused_call(const GrpcMetricsInterceptorFactory::Families& families,
                         std::string_view method, grpc::StatusCode code);

}  // namespace cpm::server
