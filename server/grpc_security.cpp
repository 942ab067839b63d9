// SPDX-License-Identifier: Apache-2.0
#include "grpc_security.h"

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "auth.h"
#include "common/logging.h"
#include "grpc_code_name.h"
#include "status_conversion.h"

namespace cpm::server {
namespace {

// Owned by the core credentials it is installed on; gRPC calls destroy() when they go.
struct ProcessorState {
  std::shared_ptr<const TokenTable> tokens;
  GrpcSecurity::RefusalHook on_refused;
};

std::string_view view(const grpc_slice& slice) {
  return {reinterpret_cast<const char*>(GRPC_SLICE_START_PTR(slice)), GRPC_SLICE_LENGTH(slice)};
}

// gRPC's auth metadata processor (C API, see grpc_security.h). It answers synchronously: the
// check is a hash and a few comparisons, nothing that blocks.
void process_metadata(void* state, grpc_auth_context* /*context*/, const grpc_metadata* md,
                      size_t num_md, grpc_process_auth_metadata_done_cb done, void* user_data) {
  const ProcessorState& st = *static_cast<const ProcessorState*>(state);
  std::string_view method;
  std::vector<std::string_view> authorization;
  std::vector<grpc_metadata> consumed;
  for (size_t i = 0; i < num_md; ++i) {
    const std::string_view key = view(md[i].key);
    if (key == ":path") {
      method = view(md[i].value);
    } else if (key == "authorization") {
      authorization.push_back(view(md[i].value));
      consumed.push_back(md[i]);
    }
  }
  const AuthDecision decision = authorize(*st.tokens, method, authorization);
  if (decision.status.ok()) {
    // No AuthContext property names the caller: with gRPC 1.51 a property added here for one
    // call also showed on every later call of the same connection, whatever its token (seen in
    // auth_tls_test). Consumed: handlers (and what they log) never see the token.
    done(user_data, consumed.data(), consumed.size(), nullptr, 0, GRPC_STATUS_OK, nullptr);
    return;
  }
  const grpc::Status status = to_grpc_status(decision.status);
  core::log_info("call refused", {{"method", method},
                                  {"code", grpc_code_name(status.error_code())},
                                  {"token", decision.token ? decision.token->name : ""},
                                  {"reason", status.error_message()}});
  if (st.on_refused) st.on_refused(method, status.error_code());
  done(user_data, nullptr, 0, nullptr, 0, static_cast<grpc_status_code>(status.error_code()),
       status.error_message().c_str());
}

// gRPC's C++ InsecureServerCredentials() refuses an auth processor (it asserts), although the
// core's insecure credentials take one just as its TLS credentials do. This wraps either kind of
// core credentials, so tokens work the same with and without TLS (a TLS-terminating proxy or
// mesh in front of cpmd is common). Implementing ServerCredentials's private virtual is how
// gRPC's own credential types plug into ServerBuilder.
class CoreServerCredentials final : public grpc::ServerCredentials {
 public:
  // Takes ownership of `core`.
  explicit CoreServerCredentials(grpc_server_credentials* core) : core_(core) {}
  ~CoreServerCredentials() override { grpc_server_credentials_release(core_); }
  CoreServerCredentials(const CoreServerCredentials&) = delete;
  CoreServerCredentials& operator=(const CoreServerCredentials&) = delete;

  // The processor is installed on the core credentials before this object exists; a second one
  // would replace it silently, so a call here is a bug.
  void SetAuthMetadataProcessor(const std::shared_ptr<grpc::AuthMetadataProcessor>&) override {
    core::log_error("CoreServerCredentials::SetAuthMetadataProcessor is not supported");
    std::abort();
  }

 private:
  int AddPortToServer(const std::string& addr, grpc_server* server) override {
    return grpc_server_add_http2_port(server, addr.c_str(), core_);
  }

  grpc_server_credentials* core_;
};

grpc_server_credentials* core_credentials(const std::optional<TlsFiles>& tls) {
  if (!tls) return grpc_insecure_server_credentials_create();
  // The core copies the PEM strings.
  const grpc_ssl_pem_key_cert_pair pair{tls->private_key.c_str(), tls->cert_chain.c_str()};
  const bool mutual = !tls->client_ca.empty();
  grpc_ssl_server_certificate_config* certificates = grpc_ssl_server_certificate_config_create(
      mutual ? tls->client_ca.c_str() : nullptr, &pair, 1);
  grpc_ssl_server_credentials_options* options =
      grpc_ssl_server_credentials_create_options_using_config(
          mutual ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                 : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
          certificates);
  return grpc_ssl_server_credentials_create_with_options(options);  // takes `options`
}

// gRPC parses certificates and keys only when a port is added, and then reports a failure as a
// port that could not be opened. A throwaway server on an ephemeral loopback port asks it first.
bool listens_with(const std::optional<TlsFiles>& tls) {
  grpc::CallbackGenericService generic;  // a server needs at least one service
  grpc::ServerBuilder builder;
  builder.RegisterCallbackGenericService(&generic);
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0",
                           std::make_shared<CoreServerCredentials>(core_credentials(tls)), &port);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server) server->Shutdown();
  return server != nullptr && port != 0;
}

absl::Status try_tls(const TlsFiles& tls, const DaemonConfig& config) {
  TlsFiles pair_only = tls;
  pair_only.client_ca.clear();
  if (!listens_with(pair_only)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tls_key_file ", config.tls_key_file, " and tls_cert_file ", config.tls_cert_file,
        ": gRPC cannot use them together (its log lines above say why); most often the key is "
        "not the one the certificate was issued for, or a PEM block is damaged. Compare "
        "`openssl x509 -noout -pubkey -in CERT` with `openssl pkey -pubout -in KEY`"));
  }
  if (!tls.client_ca.empty() && !listens_with(tls)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tls_client_ca_file ", config.tls_client_ca_file,
        ": gRPC cannot load a CA certificate from it (its log lines above say why); give the "
        "PEM certificates of the CAs that sign client certificates"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<GrpcSecurity> GrpcSecurity::load(const DaemonConfig& config) {
  GrpcSecurity security;
  auto tls = read_tls_files(config);
  if (!tls.ok()) return tls.status();
  security.tls_ = std::move(*tls);
  if (security.tls_) {
    absl::Status s = try_tls(*security.tls_, config);
    if (!s.ok()) return s;
  }
  TokenTable tokens;
  if (!config.auth_tokens_file.empty()) {
    auto loaded = TokenTable::load_file(config.auth_tokens_file);
    if (!loaded.ok()) return loaded.status();
    tokens = std::move(*loaded);
  }
  // The environment's tokens, named for their variables (main() reads them).
  if (!config.admin_token.empty()) {
    absl::Status s = tokens.add_value("CPMD_ADMIN_TOKEN", Role::kAdmin, config.admin_token);
    if (!s.ok()) return s;
  }
  if (!config.inference_token.empty()) {
    absl::Status s =
        tokens.add_value("CPMD_INFERENCE_TOKEN", Role::kInference, config.inference_token);
    if (!s.ok()) return s;
  }
  security.tokens_ = std::make_shared<const TokenTable>(std::move(tokens));
  return security;
}

std::shared_ptr<grpc::ServerCredentials> GrpcSecurity::credentials(RefusalHook on_refused) const {
  if (!tls_ && tokens_->empty()) return grpc::InsecureServerCredentials();
  grpc_server_credentials* core = core_credentials(tls_);
  if (!tokens_->empty()) {
    grpc_auth_metadata_processor processor;
    processor.process = &process_metadata;
    processor.destroy = [](void* state) { delete static_cast<ProcessorState*>(state); };
    processor.state = new ProcessorState{tokens_, std::move(on_refused)};
    grpc_server_credentials_set_auth_metadata_processor(core, processor);
  }
  return std::make_shared<CoreServerCredentials>(core);
}

}  // namespace cpm::server
