// SPDX-License-Identifier: Apache-2.0
#include "daemon.h"

#include <fcntl.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "adapter_files.h"
#include "adapters_service.h"
#include "admin_service.h"
#include "common/build_info.h"
#include "common/logging.h"
#include "dataset_upload.h"
#include "grpc_metrics.h"
#include "grpc_security.h"
#include "io/model_config.h"
#include "job_manager.h"
#include "job_store.h"
#include "metrics_http.h"
#include "model_host.h"
#include "ocr_service.h"
#include "process_metrics.h"
#include "serving_metrics.h"
#include "training_metrics.h"
#include "training_service.h"

namespace cpm::server {
namespace {

namespace fs = std::filesystem;
using core::log_info;

// Holds an exclusive flock on <data_dir>/cpmd.lock for the daemon's lifetime. The kernel drops it
// when the process dies, kill -9 included, so a stale file never blocks a restart.
class DataDirLock {
 public:
  static absl::StatusOr<std::unique_ptr<DataDirLock>> acquire(const fs::path& dir) {
    const fs::path path = dir / "cpmd.lock";
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("data dir ", dir.string(), ": cannot create ", path.string(), ": ",
                       std::strerror(errno)));
    }
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      char pid[32] = {};
      const ssize_t n = ::pread(fd, pid, sizeof pid - 1, 0);
      ::close(fd);
      return absl::FailedPreconditionError(absl::StrCat(
          "data dir ", dir.string(), " is in use by another cpmd",
          n > 0 ? absl::StrCat(" (pid ", std::string(pid, static_cast<size_t>(n)), ")") : "",
          "; stop it or pass a different --data-dir"));
    }
    const std::string self = std::to_string(::getpid());
    if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, self.data(), self.size(), 0) < 0) {
      // The pid is informational only; the lock itself is held.
    }
    return std::unique_ptr<DataDirLock>(new DataDirLock(fd));
  }
  ~DataDirLock() { ::close(fd_); }

 private:
  explicit DataDirLock(int fd) : fd_(fd) {}
  int fd_;
};

std::string with_port(const std::string& address, int port) {
  return absl::StrCat(address.substr(0, address.rfind(':')), ":", port);
}

// The configured adapter roots, or <data_dir>/adapters (created) when none are.
absl::StatusOr<PathRoots> adapter_roots(const DaemonConfig& config, const fs::path& data_dir) {
  if (!config.adapter_roots.empty()) return adapter_path_roots(config.adapter_roots);
  const fs::path dir = data_dir / "adapters";
  std::error_code ec;
  fs::create_directories(dir, ec);
  return adapter_path_roots({dir.string()});
}

// What protects the gRPC port, and warnings where that is little. Token values are never logged.
void log_security(const GrpcSecurity& security, const DaemonConfig& config) {
  const TokenTable& tokens = security.tokens();
  const char* tls = security.mutual_tls() ? "mutual" : security.tls() ? "on" : "off";
  log_info("grpc security", {{"tls", tls},
                             {"auth", tokens.empty() ? "off" : "bearer"},
                             {"admin_tokens", tokens.count(Role::kAdmin)},
                             {"inference_tokens", tokens.count(Role::kInference)}});
  if (!tokens.empty() && !security.tls()) {
    core::log_warn("bearer tokens over plaintext gRPC: anyone who can read the traffic can reuse "
                   "them; set tls_cert_file and tls_key_file, or terminate TLS in front of cpmd");
  }
  const auto host = parse_host_port(config.listen);
  const bool loopback = host.ok() && (host->host == "127.0.0.1" || host->host == "localhost" ||
                                      host->host == "[::1]");
  if (tokens.empty() && !loopback) {
    core::log_warn("no bearer tokens: anyone who can reach the gRPC port may train, load adapters "
                   "and run OCR; set auth_tokens_file or CPMD_ADMIN_TOKEN",
                   {{"listen", config.listen}});
  }
}

// The services that need the model.
constexpr const char* kModelServices[] = {"cpm.v1.Ocr", "cpm.v1.Adapters", "cpm.v1.Training"};

}  // namespace

// Members are destroyed bottom-up: the server before the services it calls, the services and the
// /metrics endpoint before the model host they read, the engine (in the host) before the metrics
// registry that its observer records into.
struct Daemon::State {
  DaemonConfig config;
  std::unique_ptr<DataDirLock> lock;
  std::unique_ptr<JobStore> job_store;
  Registry registry;
  std::unique_ptr<ServingMetrics> serving_metrics;
  std::unique_ptr<TrainingMetrics> training_metrics;
  std::unique_ptr<ModelHost> host;
  std::unique_ptr<JobManager> jobs;
  std::unique_ptr<DatasetUploads> uploads;
  std::unique_ptr<MetricsHttpServer> metrics_http;
  std::unique_ptr<AdminService> admin;
  std::unique_ptr<TrainingService> training;
  std::unique_ptr<AdaptersService> adapters;
  std::unique_ptr<OcrService> ocr;
  std::unique_ptr<grpc::Server> server;
  int grpc_port = 0;
  bool shut_down = false;
};

Daemon::Daemon(std::unique_ptr<State> state) : state_(std::move(state)) {}

Daemon::~Daemon() { shutdown(std::chrono::seconds(0)); }

int Daemon::grpc_port() const { return state_->grpc_port; }
int Daemon::metrics_port() const { return state_->metrics_http->port(); }

absl::StatusOr<std::unique_ptr<Daemon>> Daemon::start(const DaemonConfig& config) {
  const auto started = std::chrono::system_clock::now();
  auto st = std::make_unique<State>();
  st->config = config;

  std::error_code ec;
  const fs::path data_dir = fs::absolute(config.data_dir, ec).lexically_normal();
  fs::create_directories(data_dir, ec);
  if (ec || !fs::is_directory(data_dir)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "data dir ", config.data_dir, ": cannot create it (", ec.message(),
        "); pass a writable --data-dir"));
  }
  auto lock = DataDirLock::acquire(data_dir);
  if (!lock.ok()) return lock.status();
  st->lock = std::move(*lock);
  auto store = JobStore::open((data_dir / "cpmd.db").string());
  if (!store.ok()) return store.status();
  st->job_store = std::move(*store);
  log_info("job store open", {{"path", st->job_store->path()},
                              {"schema_version", JobStore::latest_schema_version()}});

  const core::BuildInfo& build = core::build_info();
  st->registry
      .gauge("cpm_build_info", "Always 1; the labels describe the running build.",
             {"version", "git_commit", "torch_version", "grpc_version", "cuda", "image_decoder"})
      .with({build.version, build.git_commit, build.torch_version, grpc::Version(),
             build.cuda ? "true" : "false", build.image_decoder})
      .set(1);
  register_process_metrics(st->registry);
  st->serving_metrics = std::make_unique<ServingMetrics>(st->registry);
  auto host = ModelHost::create(config, st->serving_metrics->observer());
  if (!host.ok()) return host.status();
  st->host = std::move(*host);
  st->serving_metrics->watch(*st->host);
  st->training_metrics = std::make_unique<TrainingMetrics>(st->registry);
  st->training_metrics->watch(*st->job_store);
  JobManagerOptions job_options;
  job_options.data_dir = data_dir.string();
  job_options.base_model = config.model;
  job_options.dataset_roots = config.dataset_roots;
  auto jobs = JobManager::start(*st->job_store, *st->host, *st->training_metrics, job_options);
  if (!jobs.ok()) return jobs.status();
  st->jobs = std::move(*jobs);
  st->uploads = std::make_unique<DatasetUploads>(*st->job_store, *st->host, (data_dir / "datasets").string());
  auto roots = adapter_roots(config, data_dir);
  if (!roots.ok()) return roots.status();

  // TLS and tokens (server/auth.h). validate() loaded them once already; an error here means a
  // file changed since.
  auto security = GrpcSecurity::load(config);
  if (!security.ok()) return security.status();
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  auto grpc_metrics = std::make_unique<GrpcMetricsInterceptorFactory>(st->registry);
  // Calls refused for their token never reach the interceptor; the processor counts them.
  auto credentials = security->credentials(
      [families = grpc_metrics->families()](std::string_view method, grpc::StatusCode code) {
        record_refused_call(families, method, code);
      });
  builder.AddListeningPort(config.listen, std::move(credentials), &st->grpc_port);
  builder.SetMaxReceiveMessageSize(static_cast<int>(config.max_message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(config.max_message_bytes));
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(std::move(grpc_metrics));
  builder.experimental().SetInterceptorCreators(std::move(interceptors));

  auto http = MetricsHttpServer::start(config.metrics_listen, st->registry);
  if (!http.ok()) return http.status();
  st->metrics_http = std::move(*http);
  const std::string metrics_address = with_port(config.metrics_listen, st->metrics_http->port());

  ServerFacts facts;
  facts.config = config;
  if (!config.model.empty()) {
    auto configs = core::io::load_checkpoint_configs(config.model);
    if (!configs.ok()) {
      return absl::Status(configs.status().code(),
                          absl::StrCat("model ", config.model, ": ", configs.status().message()));
    }
    for (const std::string& missing : configs->missing) {
      core::log_warn("checkpoint file missing, using the reference defaults",
                     {{"model", config.model}, {"file", missing}});
    }
    facts.model_configs = std::move(*configs);
  }
  facts.metrics_address = metrics_address;
  facts.start_time = started;
  st->admin = std::make_unique<AdminService>(facts, *st->host);
  // Chunks leave room for the rest of the message within the message size limit.
  const size_t chunk_bytes =
      static_cast<size_t>(std::min<int64_t>(int64_t{1} << 20, config.max_message_bytes / 2));
  st->adapters = std::make_unique<AdaptersService>(*st->host, *std::move(roots), chunk_bytes);
  st->ocr = std::make_unique<OcrService>(*st->host, *st->serving_metrics);
  st->training = std::make_unique<TrainingService>(*st->jobs, *st->uploads);
  builder.RegisterService(st->admin.get());
  builder.RegisterService(st->training.get());
  builder.RegisterService(st->adapters.get());
  builder.RegisterService(st->ocr.get());
  st->server = builder.BuildAndStart();
  if (!st->server || st->grpc_port == 0) {
    return absl::UnavailableError(absl::StrCat(
        "gRPC: cannot listen on ", config.listen,
        "; is the port in use or the address not local? choose another with --listen"));
  }
  const std::string grpc_address = with_port(config.listen, st->grpc_port);
  st->admin->set_grpc_address(grpc_address);

  // Overall health ("") is SERVING once we listen; a service that cannot answer yet says so. Ocr
  // and Adapters turn SERVING when the model is ready.
  grpc::HealthCheckServiceInterface* health = st->server->GetHealthCheckService();
  health->SetServingStatus(true);
  health->SetServingStatus("cpm.v1.Admin", true);
  for (const std::string& name : facts.unimplemented_services) {
    health->SetServingStatus(name, false);
  }
  for (const char* name : kModelServices) health->SetServingStatus(name, false);
  st->host->start_loading([health, jobs = st->jobs.get()](const ModelStatus& status) {
    // After the health service's Shutdown() this is ignored, so shutting down stays NOT_SERVING.
    for (const char* name : kModelServices) {
      health->SetServingStatus(name, status.state == ModelState::kReady);
    }
    if (status.state == ModelState::kReady) jobs->on_model_ready();
  });
  log_info("grpc listening", {{"addr", grpc_address}, {"port", st->grpc_port}});
  log_security(*security, config);
  log_info("metrics listening", {{"addr", metrics_address},
                                 {"port", st->metrics_http->port()},
                                 {"path", "/metrics"}});
  return std::unique_ptr<Daemon>(new Daemon(std::move(st)));
}

void Daemon::shutdown(std::chrono::seconds grace) {
  State& st = *state_;
  if (st.shut_down) return;
  st.shut_down = true;
  // Job watchers end at once (they could wait for hours), telling clients how to re-attach.
  if (st.jobs) st.jobs->begin_shutdown();
  if (st.server) {
    // Probes see NOT_SERVING at once; in-flight calls get `grace` to finish.
    st.server->GetHealthCheckService()->Shutdown();
    st.server->Shutdown(std::chrono::system_clock::now() + grace);
    st.server->Wait();
  }
  // The running job checkpoints and pauses while the engine still runs; it resumes on restart.
  if (st.jobs) st.jobs->shutdown();
  // No call can reach the engine any more: what is still queued fails, then the engine stops.
  if (st.host) st.host->shutdown();
  st.metrics_http.reset();
  st.job_store.reset();
  st.lock.reset();
}

}  // namespace cpm::server
