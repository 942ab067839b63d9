// SPDX-License-Identifier: Apache-2.0
#include "grpc_metrics.h"

#include <google/protobuf/descriptor.h>

#include <chrono>
#include <string>

#include "absl/strings/str_cat.h"
#include "grpc_code_name.h"

namespace cpm::server {
namespace {

using grpc::experimental::InterceptionHookPoints;
using grpc::experimental::ServerRpcInfo;

const char* rpc_type_name(ServerRpcInfo::Type type) {
  switch (type) {
    case ServerRpcInfo::Type::UNARY:
      return "unary";
    case ServerRpcInfo::Type::CLIENT_STREAMING:
      return "client_stream";
    case ServerRpcInfo::Type::SERVER_STREAMING:
      return "server_stream";
    case ServerRpcInfo::Type::BIDI_STREAMING:
      return "bidi_stream";
  }
  return "unknown";
}

class MetricsInterceptor : public grpc::experimental::Interceptor {
 public:
  MetricsInterceptor(ServerRpcInfo* info, const GrpcMetricsInterceptorFactory::Families& families)
      : families_(families), type_(rpc_type_name(info->type())) {
    // "/package.Service/Method"
    const std::string full = info->method() ? info->method() : "";
    const auto slash = full.rfind('/');
    if (full.size() > 1 && slash != std::string::npos && slash > 0) {
      service_ = full.substr(1, slash - 1);
      method_ = full.substr(slash + 1);
    } else {
      service_ = "unknown";
      method_ = full;
    }
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_INITIAL_METADATA)) {
      start_ = std::chrono::steady_clock::now();
      families_.started->with({type_, service_, method_}).inc();
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      const grpc::Status status = methods->GetSendStatus();
      families_.handled->with({type_, service_, method_, cpm::grpc_code_name(status.error_code())}).inc();
      const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start_;
      families_.seconds->with({type_, service_, method_}).observe(elapsed.count());
    }
    methods->Proceed();
  }

 private:
  const GrpcMetricsInterceptorFactory::Families families_;
  const std::string type_;
  std::string service_;
  std::string method_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

}  // namespace

GrpcMetricsInterceptorFactory::GrpcMetricsInterceptorFactory(Registry& registry) {
  const std::vector<std::string> labels = {"grpc_type", "grpc_service", "grpc_method"};
  families_.started = &registry.counter("grpc_server_started_total",
                                        "Total number of RPCs started on the server.", labels);
  families_.handled = &registry.counter(
      "grpc_server_handled_total", "Total number of RPCs completed on the server, by status code.",
      {"grpc_type", "grpc_service", "grpc_method", "grpc_code"});
  families_.seconds = &registry.histogram(
      "grpc_server_handling_seconds",
      "Time from receiving an RPC to sending its status, in seconds.", labels,
      default_latency_buckets());
}

void record_refused_call(const GrpcMetricsInterceptorFactory::Families& families,
                         std::string_view method, grpc::StatusCode code) {
  std::string service = "unknown";
  std::string name = "unknown";
  const char* type = "unknown";
  const auto slash = method.rfind('/');
  if (method.size() > 2 && method.front() == '/' && slash != std::string_view::npos && slash > 1) {
    // Every service this process serves is compiled in, so its descriptor is in the pool.
    const google::protobuf::MethodDescriptor* descriptor =
        google::protobuf::DescriptorPool::generated_pool()->FindMethodByName(
            absl::StrCat(std::string(method.substr(1, slash - 1)), ".",
                         std::string(method.substr(slash + 1))));
    if (descriptor != nullptr) {
      service = descriptor->service()->full_name();
      name = descriptor->name();
      const bool client = descriptor->client_streaming();
      const bool server = descriptor->server_streaming();
      type = rpc_type_name(client ? (server ? ServerRpcInfo::Type::BIDI_STREAMING
                                            : ServerRpcInfo::Type::CLIENT_STREAMING)
                                  : (server ? ServerRpcInfo::Type::SERVER_STREAMING
                                            : ServerRpcInfo::Type::UNARY));
    }
  }
  families.started->with({type, service, name}).inc();
  families.handled->with({type, service, name, cpm::grpc_code_name(code)}).inc();
  families.seconds->with({type, service, name}).observe(0.0);
}

grpc::experimental::Interceptor* GrpcMetricsInterceptorFactory::CreateServerInterceptor(
    ServerRpcInfo* info) {
  return new MetricsInterceptor(info, families_);
}

}  // namespace cpm::server
