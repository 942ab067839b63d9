// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <grpcpp/support/server_interceptor.h>

#include <memory>

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

 private:
  Families families_;
};

}  // namespace cpm::server
