// SPDX-License-Identifier: Apache-2.0
// TLS files, GrpcSecurity and the token processor inside a real gRPC server in this process: the
// certificates are made with the openssl command line at test time.
#include <gmock/gmock.h>
#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <future>
#include <mutex>
#include <sstream>

#include "config.h"
#include "cpm/v1/adapters.grpc.pb.h"
#include "cpm/v1/ocr.grpc.pb.h"
#include "cpm/v1/training.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc_metrics.h"
#include "grpc_security.h"
#include "metrics.h"
#include "test_util.h"
#include "tls_files.h"

namespace cpm::server {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kAdminToken[] = "admin-token-0123456789abcdef";
constexpr char kInferenceToken[] = "inference-token-0123456789abcdef";

// A throwaway PKI: a CA, a server certificate for localhost / 127.0.0.1 and a client certificate
// that it signed, and a key that belongs to neither.
class Pki {
 public:
  Pki() {
    dir_.write("server.ext", "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
    const std::string ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    for (const std::string& cmd : std::vector<std::string>{
             "openssl req -x509 " + ec + " -keyout ca.key -out ca.crt -days 2 -subj /CN=cpm-test-ca",
             "openssl req " + ec + " -keyout server.key -out server.csr -subj /CN=localhost",
             "openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial "
             "-out server.crt -days 2 -extfile server.ext",
             "openssl req " + ec + " -keyout client.key -out client.csr -subj /CN=cpm-test-client",
             "openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial "
             "-out client.crt -days 2",
             "openssl genpkey -algorithm ec -pkeyopt ec_paramgen_curve:P-256 -out other.key",
             "openssl pkey -in server.key -aes256 -passout pass:secret -out encrypted.key"}) {
      const std::string full = "cd '" + dir_.path().string() + "' && " + cmd + " 2>/dev/null";
      EXPECT_EQ(std::system(full.c_str()), 0) << cmd << " (is openssl installed?)";
    }
  }
  std::string path(const std::string& name) const { return dir_.file(name); }
  std::string read(const std::string& name) const {
    std::ifstream in(path(name));
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }
  std::string write(const std::string& name, const std::string& text) const {
    return dir_.write(name, text);
  }

 private:
  testing::TempDir dir_;
};

DaemonConfig tls_config(const Pki& pki) {
  DaemonConfig c;
  c.tls_cert_file = pki.path("server.crt");
  c.tls_key_file = pki.path("server.key");
  return c;
}

std::string tls_error(const DaemonConfig& c) {
  auto files = read_tls_files(c);
  EXPECT_FALSE(files.ok());
  if (files.ok()) return "";
  EXPECT_EQ(files.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(files.status().message());
}

TEST(TlsFiles, OffWhenNothingIsSet) {
  auto files = read_tls_files(DaemonConfig{});
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_FALSE(files->has_value());
}

TEST(TlsFiles, ReadsThePairAndTheClientCa) {
  Pki pki;
  DaemonConfig c = tls_config(pki);
  c.tls_client_ca_file = pki.path("ca.crt");
  auto files = read_tls_files(c);
  ASSERT_TRUE(files.ok()) << files.status();
  ASSERT_TRUE(files->has_value());
  EXPECT_EQ((*files)->cert_chain, pki.read("server.crt"));
  EXPECT_EQ((*files)->private_key, pki.read("server.key"));
  EXPECT_EQ((*files)->client_ca, pki.read("ca.crt"));
}

TEST(TlsFiles, HalfAPairOrACaAloneIsAnError) {
  Pki pki;
  DaemonConfig c;
  c.tls_cert_file = pki.path("server.crt");
  EXPECT_THAT(tls_error(c), HasSubstr("tls_cert_file is set but tls_key_file is not"));
  c = DaemonConfig{};
  c.tls_key_file = pki.path("server.key");
  EXPECT_THAT(tls_error(c), HasSubstr("tls_key_file is set but tls_cert_file is not"));
  c = DaemonConfig{};
  c.tls_client_ca_file = pki.path("ca.crt");
  EXPECT_THAT(tls_error(c), HasSubstr("tls_client_ca_file needs tls_cert_file and tls_key_file"));
}

TEST(TlsFiles, MissingEmptyOrWrongFilesAreNamedWithTheFix) {
  Pki pki;
  DaemonConfig c = tls_config(pki);
  c.tls_cert_file = pki.path("nope.crt");
  EXPECT_THAT(tls_error(c), AllOf(HasSubstr("tls_cert_file " + pki.path("nope.crt")),
                                  HasSubstr("no such file")));
  c = tls_config(pki);
  c.tls_key_file = pki.write("empty.key", "");
  EXPECT_THAT(tls_error(c), AllOf(HasSubstr("tls_key_file " + pki.path("empty.key")),
                                  HasSubstr("is empty")));
  c = tls_config(pki);
  c.tls_cert_file = pki.path("");
  EXPECT_THAT(tls_error(c), HasSubstr("not a regular file"));
  c = tls_config(pki);
  std::swap(c.tls_cert_file, c.tls_key_file);
  EXPECT_THAT(tls_error(c), AllOf(HasSubstr("tls_cert_file " + pki.path("server.key")),
                                  HasSubstr("swapped")));
  c = tls_config(pki);
  c.tls_key_file = pki.path("client.crt");
  EXPECT_THAT(tls_error(c), AllOf(HasSubstr("tls_key_file " + pki.path("client.crt")),
                                  HasSubstr("holds a certificate but no private key")));
  c = tls_config(pki);
  c.tls_key_file = pki.path("encrypted.key");
  EXPECT_THAT(tls_error(c), AllOf(HasSubstr("encrypted"), HasSubstr("openssl pkey")));
  c = tls_config(pki);
  c.tls_client_ca_file = pki.write("notes.txt", "not a certificate\n");
  EXPECT_THAT(tls_error(c), AllOf(HasSubstr("tls_client_ca_file " + pki.path("notes.txt")),
                                  HasSubstr("holds no PEM certificate")));
}

TEST(GrpcSecurity, AKeyThatIsNotTheCertificatesIsAnErrorNamingBoth) {
  Pki pki;
  DaemonConfig c = tls_config(pki);
  c.tls_key_file = pki.path("other.key");
  auto s = GrpcSecurity::load(c);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.status().message(),
              AllOf(HasSubstr(pki.path("other.key")), HasSubstr(pki.path("server.crt")),
                    HasSubstr("not the one the certificate was issued for")));
  // The same through the config, so cpmd exits 2 on it.
  testing::TempDir dir;
  ConfigOverrides flags;
  flags.config_file = dir.write("cpmd.json", "{\"tls_cert_file\": \"" + pki.path("server.crt") +
                                                 "\", \"tls_key_file\": \"" +
                                                 pki.path("other.key") + "\"}");
  EXPECT_EQ(load_config(flags).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(GrpcSecurity, ADamagedClientCaIsAnError) {
  Pki pki;
  DaemonConfig c = tls_config(pki);
  c.tls_client_ca_file =
      pki.write("bad-ca.crt", "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n");
  auto s = GrpcSecurity::load(c);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.status().message(), AllOf(HasSubstr("tls_client_ca_file " + pki.path("bad-ca.crt")),
                                          HasSubstr("cannot load a CA certificate")));
}

TEST(GrpcSecurity, CombinesTheTokensFileAndTheEnvironment) {
  testing::TempDir dir;
  DaemonConfig c;
  c.auth_tokens_file = dir.write(
      "tokens.json", std::string(R"({"tokens": [{"name": "ci", "role": "admin", "token": ")") +
                         kAdminToken + "\"}]}");
  c.inference_token = kInferenceToken;
  auto s = GrpcSecurity::load(c);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_FALSE(s->tls());
  EXPECT_EQ(s->tokens().count(Role::kAdmin), 1u);
  EXPECT_EQ(s->tokens().find(kInferenceToken)->name, "CPMD_INFERENCE_TOKEN");
  c.admin_token = "short";
  EXPECT_THAT(GrpcSecurity::load(c).status().message(), HasSubstr("CPMD_ADMIN_TOKEN"));
  c.admin_token = kAdminToken;
  EXPECT_THAT(GrpcSecurity::load(c).status().message(), HasSubstr("the same token as 'ci'"));
  c.admin_token.clear();
  c.auth_tokens_file = dir.file("missing.json");
  EXPECT_EQ(GrpcSecurity::load(c).status().code(), absl::StatusCode::kNotFound);
}

TEST(Config, TlsAndTokenKeysComeFromTheFileAndFlagsButTokensNever) {
  Pki pki;
  testing::TempDir dir;
  const std::string tokens = dir.write(
      "tokens.json", std::string(R"({"tokens": [{"name": "ci", "role": "admin", "token": ")") +
                         kAdminToken + "\"}]}");
  ConfigOverrides flags;
  flags.config_file = dir.write(
      "cpmd.json", "{\"tls_cert_file\": \"" + pki.path("server.crt") + "\", \"tls_key_file\": \"" +
                       pki.path("server.key") + "\", \"auth_tokens_file\": \"" + tokens + "\"}");
  flags.tls_client_ca_file = pki.path("ca.crt");
  flags.admin_token = "env-admin-token-0123456789";
  auto c = load_config(flags);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->tls_cert_file, pki.path("server.crt"));
  EXPECT_EQ(c->tls_client_ca_file, pki.path("ca.crt"));
  EXPECT_EQ(c->auth_tokens_file, tokens);
  EXPECT_EQ(c->admin_token, "env-admin-token-0123456789");
  for (const char* key : {"admin_token", "inference_token"}) {
    flags = ConfigOverrides{};
    flags.config_file = dir.write("secret.json", std::string("{\"") + key + "\": \"" +
                                                     kAdminToken + "\"}");
    auto bad = load_config(flags);
    EXPECT_THAT(bad.status().message(), HasSubstr(std::string("unknown key '") + key + "'"));
  }
}

// What the handler behind the processor saw: it is reached only by calls that were let through.
struct Seen {
  std::mutex mu;
  std::vector<std::string> methods;
  bool saw_authorization = false;
};

// Answers every method with UNIMPLEMENTED "reached the handler", so a test can tell a call that
// passed the processor from one it refused.
class RecordingService : public grpc::CallbackGenericService {
 public:
  explicit RecordingService(Seen& seen) : seen_(seen) {}
  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext* ctx) override {
    {
      std::lock_guard<std::mutex> lock(seen_.mu);
      seen_.methods.push_back(ctx->method());
      seen_.saw_authorization |= ctx->client_metadata().count("authorization") > 0;
    }
    class Reached : public grpc::ServerGenericBidiReactor {
     public:
      Reached() { Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "reached the handler")); }
      void OnDone() override { delete this; }
    };
    return new Reached;
  }

 private:
  Seen& seen_;
};

// A server with cpmd's credentials and metrics interceptor, and the recording service.
class SecuredServer {
 public:
  explicit SecuredServer(const DaemonConfig& config) : service_(seen) {
    auto security = GrpcSecurity::load(config);
    EXPECT_TRUE(security.ok()) << security.status();
    auto metrics = std::make_unique<GrpcMetricsInterceptorFactory>(registry);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0",
                             security->credentials([families = metrics->families()](
                                                       std::string_view method, grpc::StatusCode code) {
                               record_refused_call(families, method, code);
                             }),
                             &port_);
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> creators;
    creators.push_back(std::move(metrics));
    builder.experimental().SetInterceptorCreators(std::move(creators));
    builder.RegisterCallbackGenericService(&service_);
    server_ = builder.BuildAndStart();
    EXPECT_NE(server_, nullptr);
  }
  ~SecuredServer() {
    if (server_) server_->Shutdown();
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

  Registry registry;
  Seen seen;

 private:
  RecordingService service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

std::unique_ptr<grpc::ClientContext> context(const std::string& token = "") {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  if (!token.empty()) ctx->AddMetadata("authorization", "Bearer " + token);
  return ctx;
}

grpc::Status recognize(grpc::Channel& channel, const std::string& token) {
  cpm::v1::RecognizeResponse response;
  return cpm::v1::Ocr::NewStub(std::shared_ptr<grpc::Channel>(&channel, [](auto*) {}))
      ->Recognize(context(token).get(), cpm::v1::RecognizeRequest(), &response);
}

grpc::Status recognize_stream(grpc::Channel& channel, const std::string& token) {
  auto ctx = context(token);
  auto stub = cpm::v1::Ocr::NewStub(std::shared_ptr<grpc::Channel>(&channel, [](auto*) {}));
  auto reader = stub->RecognizeStream(ctx.get(), cpm::v1::RecognizeRequest());
  cpm::v1::RecognizeStreamResponse message;
  while (reader->Read(&message)) {
  }
  return reader->Finish();
}

grpc::Status list_adapters(grpc::Channel& channel, const std::string& token) {
  cpm::v1::ListAdaptersResponse response;
  return cpm::v1::Adapters::NewStub(std::shared_ptr<grpc::Channel>(&channel, [](auto*) {}))
      ->ListAdapters(context(token).get(), cpm::v1::ListAdaptersRequest(), &response);
}

grpc::Status watch_job(grpc::Channel& channel, const std::string& token) {
  auto ctx = context(token);
  auto stub = cpm::v1::Training::NewStub(std::shared_ptr<grpc::Channel>(&channel, [](auto*) {}));
  auto reader = stub->WatchJob(ctx.get(), cpm::v1::WatchJobRequest());
  cpm::v1::JobEvent event;
  while (reader->Read(&event)) {
  }
  return reader->Finish();
}

grpc::Status health(grpc::Channel& channel, const std::string& token) {
  grpc::health::v1::HealthCheckResponse response;
  return grpc::health::v1::Health::NewStub(std::shared_ptr<grpc::Channel>(&channel, [](auto*) {}))
      ->Check(context(token).get(), grpc::health::v1::HealthCheckRequest(), &response);
}

grpc::Status unknown_method(grpc::Channel& channel, const std::string& token) {
  grpc::GenericStub stub(std::shared_ptr<grpc::Channel>(&channel, [](auto*) {}));
  auto ctx = context(token);
  grpc::Slice empty("");
  grpc::ByteBuffer request(&empty, 1), response;  // a default ByteBuffer is no message at all
  std::promise<grpc::Status> done;
  stub.UnaryCall(ctx.get(), "/no.such.Service/Method", grpc::StubOptions(), &request, &response,
                 [&done](grpc::Status s) { done.set_value(std::move(s)); });
  return done.get_future().get();
}

bool reached(const grpc::Status& s) {
  return s.error_code() == grpc::StatusCode::UNIMPLEMENTED &&
         s.error_message() == "reached the handler";
}

TEST(TokenProcessor, RefusesBeforeTheHandlerWithTheRightCodesAndCountsTheRefusals) {
  testing::TempDir dir;
  DaemonConfig config;
  config.auth_tokens_file = dir.write(
      "tokens.json", std::string(R"({"tokens": [{"name": "ci", "role": "admin", "token": ")") +
                         kAdminToken + R"("}, {"name": "frontend", "role": "inference", "token": ")" +
                         kInferenceToken + "\"}]}");
  SecuredServer server(config);
  auto channel = grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials());

  // No token, a wrong token: UNAUTHENTICATED on unary and streaming methods alike.
  for (const std::string& token : {std::string(), std::string("wrong-token-0123456789abc")}) {
    for (const grpc::Status& s : {recognize(*channel, token), recognize_stream(*channel, token),
                                  list_adapters(*channel, token), watch_job(*channel, token)}) {
      EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << s.error_message();
    }
  }
  EXPECT_THAT(recognize(*channel, "").error_message(),
              HasSubstr("cpm.v1.Ocr/Recognize needs a bearer token"));
  // An inference token: Ocr yes, Adapters and Training no.
  EXPECT_TRUE(reached(recognize(*channel, kInferenceToken)));
  EXPECT_TRUE(reached(recognize_stream(*channel, kInferenceToken)));
  for (const grpc::Status& s : {list_adapters(*channel, kInferenceToken),
                                watch_job(*channel, kInferenceToken)}) {
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_THAT(s.error_message(),
                AllOf(HasSubstr("needs a token with role admin"), HasSubstr("'frontend'")));
  }
  // An admin token: everything. Health: no token needed.
  for (const grpc::Status& s :
       {recognize(*channel, kAdminToken), recognize_stream(*channel, kAdminToken),
        list_adapters(*channel, kAdminToken), watch_job(*channel, kAdminToken),
        health(*channel, ""), health(*channel, kInferenceToken)}) {
    EXPECT_TRUE(reached(s)) << s.error_code() << " " << s.error_message();
  }
  EXPECT_EQ(health(*channel, "wrong-token-0123456789abc").error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(unknown_method(*channel, "").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(unknown_method(*channel, kInferenceToken).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);

  {
    std::lock_guard<std::mutex> lock(server.seen.mu);
    EXPECT_EQ(server.seen.methods,
              (std::vector<std::string>{"/cpm.v1.Ocr/Recognize", "/cpm.v1.Ocr/RecognizeStream",
                                        "/cpm.v1.Ocr/Recognize", "/cpm.v1.Ocr/RecognizeStream",
                                        "/cpm.v1.Adapters/ListAdapters", "/cpm.v1.Training/WatchJob",
                                        "/grpc.health.v1.Health/Check",
                                        "/grpc.health.v1.Health/Check"}));
    // The token was taken off the metadata before the handler.
    EXPECT_FALSE(server.seen.saw_authorization);
  }

  const std::string text = server.registry.render();
  // Refused calls are counted once, with their method's own labels...
  EXPECT_THAT(text, HasSubstr("grpc_server_handled_total{grpc_type=\"server_stream\",grpc_service="
                              "\"cpm.v1.Ocr\",grpc_method=\"RecognizeStream\",grpc_code="
                              "\"UNAUTHENTICATED\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("grpc_server_handled_total{grpc_type=\"unary\",grpc_service="
                              "\"cpm.v1.Adapters\",grpc_method=\"ListAdapters\",grpc_code="
                              "\"PERMISSION_DENIED\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("grpc_server_handled_total{grpc_type=\"server_stream\",grpc_service="
                              "\"cpm.v1.Training\",grpc_method=\"WatchJob\",grpc_code="
                              "\"PERMISSION_DENIED\"} 1\n"));
  // (The admin's call reached the generic handler, which the interceptor counts as bidi_stream.)
  EXPECT_THAT(text, HasSubstr("grpc_server_started_total{grpc_type=\"unary\",grpc_service="
                              "\"cpm.v1.Adapters\",grpc_method=\"ListAdapters\"} 3\n"));
  // ...except a method no service defines, whose name a caller without a token chose.
  EXPECT_THAT(text, HasSubstr("grpc_server_handled_total{grpc_type=\"unknown\",grpc_service="
                              "\"unknown\",grpc_method=\"unknown\",grpc_code=\"UNAUTHENTICATED\"} 1\n"));
  EXPECT_THAT(text, Not(HasSubstr("no.such.Service")));
}

std::shared_ptr<grpc::Channel> tls_channel(const SecuredServer& server, const Pki& pki,
                                           bool client_certificate) {
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = pki.read("ca.crt");
  if (client_certificate) {
    options.pem_private_key = pki.read("client.key");
    options.pem_cert_chain = pki.read("client.crt");
  }
  return grpc::CreateChannel(server.address(), grpc::SslCredentials(options));
}

TEST(TokenProcessor, WorksOverTlsAndPlaintextClientsAreTurnedAway) {
  Pki pki;
  DaemonConfig config = tls_config(pki);
  config.admin_token = kAdminToken;
  SecuredServer server(config);
  auto tls = tls_channel(server, pki, false);
  EXPECT_TRUE(reached(list_adapters(*tls, kAdminToken)));
  EXPECT_EQ(list_adapters(*tls, "").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  auto plain = grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials());
  EXPECT_EQ(list_adapters(*plain, kAdminToken).error_code(), grpc::StatusCode::UNAVAILABLE);
  std::lock_guard<std::mutex> lock(server.seen.mu);
  EXPECT_EQ(server.seen.methods.size(), 1u);
}

TEST(TokenProcessor, MutualTlsNeedsAClientCertificateFromTheCa) {
  Pki pki;
  DaemonConfig config = tls_config(pki);
  config.tls_client_ca_file = pki.path("ca.crt");
  SecuredServer server(config);  // no tokens: TLS alone
  EXPECT_TRUE(reached(health(*tls_channel(server, pki, true), "")));
  EXPECT_TRUE(reached(list_adapters(*tls_channel(server, pki, true), "")));
  EXPECT_EQ(health(*tls_channel(server, pki, false), "").error_code(),
            grpc::StatusCode::UNAVAILABLE);
  std::lock_guard<std::mutex> lock(server.seen.mu);
  EXPECT_EQ(server.seen.methods.size(), 2u);
}

}  // namespace
}  // namespace cpm::server
