// SPDX-License-Identifier: Apache-2.0
#include "job_manager.h"

#include <filesystem>
#include <limits>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "api_values.h"
#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "io/atomic_file.h"
#include "job_events.h"
#include "job_spec.h"
#include "model_host.h"
#include "runtime/engine.h"
#include "runtime/training_run.h"
#include "train/trainer.h"
#include "training_metrics.h"

namespace cpm::server {
namespace {

namespace fs = std::filesystem;
namespace runtime = core::runtime;
using cpm::v1::Job;
using cpm::v1::JobEvent;
using cpm::v1::JobState;
using core::log_info;
using core::log_warn;

c10::ScalarType dtype_of(const ModelStatus& status) {
  return status.dtype == "bfloat16" ? c10::ScalarType::BFloat16 : c10::ScalarType::Float;
}

// Step of the newest complete checkpoint-<step> folder in `dir`; 0 when there is none.
int64_t newest_checkpoint_step(const std::string& dir) {
  const std::optional<std::string> newest = core::train::latest_checkpoint(dir);
  int64_t step = 0;
  if (newest && !absl::SimpleAtoi(fs::path(*newest).filename().string().substr(sizeof("checkpoint-") - 1), &step)) {
    step = 0;
  }
  return step;
}

// How the job's records become examples, with the engine's tokenizer and templates.
absl::StatusOr<core::train::ExampleBuilder> example_builder(const runtime::Engine& engine,
                                                            const cpm::v1::JobSpec& spec) {
  core::train::ExampleOptions examples;
  examples.model_max_length = spec.data().model_max_length();
  examples.max_slice_nums = spec.data().max_slice_nums();
  return core::train::ExampleBuilder::create(engine.tokenizer(), engine.chat_template(),
                                             engine.configs().preprocessor, examples);
}

}  // namespace

// Forwards a run's reports to the manager, by job id.
class JobManager::Listener final : public runtime::TrainingListener {
 public:
  Listener(JobManager& m, std::string id) : m_(m), id_(std::move(id)) {}
  void on_started(int64_t resumed_from, int64_t total_steps) override {
    m_.on_started(id_, resumed_from, total_steps);
  }
  void on_progress(const runtime::TrainingProgress& p) override {
    m_.record(id_, [&p](Job& job) {
      *job.mutable_progress() = to_proto(p);
      JobEvent e = event_for(job, p.step);
      *e.mutable_progress() = job.progress();
      return e;
    });
  }
  void on_checkpoint(int64_t step, const std::string& path, int64_t size_bytes) override {
    m_.record(id_, [&](Job& job) {
      job.set_checkpoint_step(step);
      JobEvent e = event_for(job, step);
      e.mutable_checkpoint()->set_step(step);
      e.mutable_checkpoint()->set_path(path);
      e.mutable_checkpoint()->set_size_bytes(size_bytes);
      return e;
    });
  }
  void on_eval(const core::train::EvalReport& r, double seconds) override {
    m_.record(id_, [&](Job& job) {
      *job.mutable_last_eval() = to_proto(r, seconds);
      JobEvent e = event_for(job, r.step);
      *e.mutable_eval() = job.last_eval();
      return e;
    });
  }
  void on_finished(runtime::RunOutcome outcome, const absl::Status& error) override {
    switch (outcome) {
      case runtime::RunOutcome::kSucceeded:
        return m_.on_finished(id_, cpm::v1::JOB_STATE_SUCCEEDED, "");
      case runtime::RunOutcome::kFailed:
        return m_.on_finished(id_, cpm::v1::JOB_STATE_FAILED,
                              absl::StrCat(absl::StatusCodeToString(error.code()), ": ", error.message()));
      case runtime::RunOutcome::kCancelled:
        return m_.on_finished(id_, cpm::v1::JOB_STATE_CANCELLED, "cancelled by a user");
      case runtime::RunOutcome::kPaused:
        return m_.on_finished(id_, cpm::v1::JOB_STATE_PAUSED, "cpmd is stopping; the job resumes when it starts again");
    }
  }

 private:
  JobManager& m_;
  const std::string id_;
};

JobManager::JobManager(JobStore& store, ModelHost& host, TrainingMetrics& metrics, JobManagerOptions options,
                       PathRoots dataset_roots)
    : store_(store),
      host_(host),
      metrics_(metrics),
      options_(std::move(options)),
      dataset_roots_(std::move(dataset_roots)) {}

absl::StatusOr<std::unique_ptr<JobManager>> JobManager::start(JobStore& store, ModelHost& host,
                                                             TrainingMetrics& metrics, JobManagerOptions options) {
  if (options.dataset_roots.empty()) options.dataset_roots = {(fs::path(options.data_dir) / "datasets").string()};
  for (const std::string& root : options.dataset_roots) {
    std::error_code ec;
    fs::create_directories(root, ec);
  }
  CPM_ASSIGN_OR_RETURN(PathRoots roots,
                       PathRoots::create(options.dataset_roots,
                                         {"spec.dataset_path", "dataset", "dataset_roots",
                                          "upload it with UploadDataset instead", /*directory=*/false, ""}));
  std::unique_ptr<JobManager> m(new JobManager(store, host, metrics, std::move(options), std::move(roots)));
  if (absl::Status s = m->recover(); !s.ok()) return s;
  m->scheduler_ = std::thread([p = m.get()] { p->schedule_loop(); });
  return m;
}

JobManager::~JobManager() { shutdown(); }

absl::Status JobManager::recover() {
  std::lock_guard<std::mutex> lock(mu_);
  auto interrupted = store_.jobs({cpm::v1::JOB_STATE_RUNNING, cpm::v1::JOB_STATE_CANCELLING}, std::nullopt,
                                 std::numeric_limits<int32_t>::max(), nullptr, true);
  if (!interrupted.ok()) return interrupted.status();
  for (Job& job : *interrupted) {
    // The run resumes from its newest checkpoint and records the steps after it again: their old
    // events go now, before any watcher can replay them.
    core::io::remove_stale_staging(job_dir(job.id()));  // a checkpoint the crash cut short
    const int64_t checkpoint = newest_checkpoint_step(job_dir(job.id()));
    CPM_RETURN_IF_ERROR(store_.drop_events_after(job.id(), checkpoint));
    job.set_checkpoint_step(checkpoint);
    // The run's counters (tokens seen, elapsed) carry on from the newest progress that stays.
    CPM_ASSIGN_OR_RETURN(auto kept, store_.events(job.id(), 0));
    const int64_t max_steps = job.progress().max_steps();
    job.clear_progress();
    for (const auto& [seq, event] : kept) {
      if (event.has_progress()) *job.mutable_progress() = event.progress();
    }
    job.mutable_progress()->set_max_steps(max_steps);
    const bool cancelling = job.state() == cpm::v1::JOB_STATE_CANCELLING;
    const std::string reason =
        cancelling ? "cancelled by a user; cpmd stopped before the job reached a step boundary"
                   : absl::StrCat("cpmd stopped while the job ran; it resumes from checkpoint step ",
                                  job.checkpoint_step());
    if (cancelling) job.set_error(reason);
    CPM_RETURN_IF_ERROR(transition(job, cancelling ? cpm::v1::JOB_STATE_CANCELLED : cpm::v1::JOB_STATE_PAUSED,
                                   reason));
    log_info("job recovered", {{"job", job.id()}, {"state", state_label(job.state())}});
  }
  return absl::OkStatus();
}

void JobManager::on_model_ready() {
  absl::StatusOr<runtime::Engine*> engine = host_.engine();
  if (!engine.ok()) return;
  auto done = store_.jobs({cpm::v1::JOB_STATE_SUCCEEDED}, std::nullopt, std::numeric_limits<int32_t>::max());
  if (done.ok()) {
    for (const Job& job : *done) {
      const std::string dir = adapter_dir(job.adapter_name());
      if (auto s = (*engine)->register_adapter(job.adapter_name(), dir); !s.ok()) {
        log_warn("adapter of a finished job not registered",
                 {{"job", job.id()}, {"adapter", job.adapter_name()}, {"error", std::string(s.status().message())}});
      }
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    model_ready_ = true;
  }
  changed();
}

void JobManager::changed() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++version_;
  }
  cv_.notify_all();
}

absl::Status JobManager::transition(Job& job, JobState to, const std::string& reason, std::vector<JobEvent> more) {
  // `job` changes only once the store has the change, so a failed write leaves memory and disk alike.
  Job next = job;
  JobEvent e = event_for(next, next.progress().step());
  e.mutable_state_change()->set_from(next.state());
  e.mutable_state_change()->set_to(to);
  e.mutable_state_change()->set_reason(reason);
  next.set_state(to);
  if (to == cpm::v1::JOB_STATE_RUNNING && !next.has_start_time()) set_now(next.mutable_start_time());
  if (is_terminal(to)) set_now(next.mutable_end_time());
  next.clear_queue_position();
  more.push_back(std::move(e));
  CPM_RETURN_IF_ERROR(store_.update_job(next, more));
  job = std::move(next);
  ++version_;
  if (is_terminal(to)) metrics_.finished(to, job.spec().name());
  log_info("job state", {{"job", job.id()}, {"name", job.spec().name()}, {"state", state_label(to)},
                         {"reason", reason}});
  return absl::OkStatus();
}

// ---- Submission and queries ---------------------------------------------------------------------

absl::StatusOr<std::string> JobManager::dataset_file(const cpm::v1::JobSpec& spec) {
  if (spec.dataset_case() == cpm::v1::JobSpec::kDatasetId) {
    auto stored = store_.dataset(spec.dataset_id());
    if (!stored.ok()) return stored.status();
    if (!stored->has_value()) {
      return absl::NotFoundError(absl::StrCat("dataset ", spec.dataset_id(),
                                              " is unknown; ListDatasets shows the uploaded ones"));
    }
    return (fs::path((*stored)->dir) / (*stored)->dataset_file).string();
  }
  return dataset_roots_.resolve(spec.dataset_path());
}

absl::StatusOr<Job> JobManager::submit(const cpm::v1::SubmitJobRequest& request) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return absl::UnavailableError("cpmd is shutting down; submit the job again once it is back");
  }
  absl::StatusOr<runtime::Engine*> engine = host_.engine();
  if (!engine.ok()) return engine.status();
  Job job;
  job.set_id(random_id(""));
  auto spec = complete_spec(request.spec(), job.id(), dtype_of(host_.status()));
  if (!spec.ok()) return spec.status();
  *job.mutable_spec() = *std::move(spec);
  const std::string& name = job.spec().name();
  auto taken = store_.job_name_taken(name);
  if (!taken.ok()) return taken.status();
  if (*taken) return absl::AlreadyExistsError(absl::StrCat("a job named \"", name, "\" exists; choose another name"));
  if ((*engine)->adapter(name).ok()) {
    return absl::AlreadyExistsError(absl::StrCat("an adapter named \"", name,
                                                 "\" is registered; the job's adapter would take its name; "
                                                 "choose another job name"));
  }
  if (std::error_code ec; fs::exists(adapter_dir(name), ec)) {
    return absl::AlreadyExistsError(absl::StrCat("the adapter folder ", adapter_dir(name),
                                                 " exists; choose another job name (or move that folder away)"));
  }
  auto file = dataset_file(job.spec());
  if (!file.ok()) return file.status();
  cpm::v1::DataOptions& data_spec = *job.mutable_spec()->mutable_data();
  if (data_spec.format() == cpm::v1::DATASET_FORMAT_UNSPECIFIED) {  // as the reader decides it
    const std::string ext = absl::AsciiStrToLower(fs::path(*file).extension().string());
    if (ext == ".csv") data_spec.set_format(cpm::v1::DATASET_FORMAT_CSV);
    if (ext == ".json" || ext == ".jsonl") data_spec.set_format(cpm::v1::DATASET_FORMAT_CONVERSATION_JSON);
  }
  // The dataset is read and every record checked now, so a bad one fails the submission (with
  // the list) rather than the job later.
  const core::train::DataOptions data = data_options(job.spec());
  auto builder = example_builder(**engine, job.spec());
  if (!builder.ok()) return builder.status();
  auto loaded = core::train::load_dataset(*file, *builder, data);
  if (!loaded.ok()) {
    return absl::Status(loaded.status().code(), absl::StrCat("dataset ", *file, ": ", loaded.status().message()));
  }
  job.set_num_train_examples(static_cast<int64_t>(loaded->split.train.size()));
  job.set_num_eval_examples(static_cast<int64_t>(loaded->split.eval.size()));
  job.set_num_skipped_records(static_cast<int64_t>(loaded->skipped.size()));
  job.set_state(cpm::v1::JOB_STATE_QUEUED);
  set_now(job.mutable_create_time());
  if (request.validate_only()) return job;

  JobEvent e = event_for(job, 0);
  e.mutable_state_change()->set_from(cpm::v1::JOB_STATE_UNSPECIFIED);
  e.mutable_state_change()->set_to(cpm::v1::JOB_STATE_QUEUED);
  e.mutable_state_change()->set_reason("submitted");
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return absl::UnavailableError("cpmd is shutting down; submit the job again once it is back");
    if (absl::Status s = store_.insert_job(job, e); !s.ok()) {
      if (s.code() != absl::StatusCode::kAlreadyExists) return s;
      return absl::AlreadyExistsError(absl::StrCat("a job named \"", name, "\" exists; choose another name"));
    }
    validated_[job.id()] = *std::move(loaded);
  }
  log_info("job submitted", {{"job", job.id()}, {"name", name}, {"dataset", *file},
                             {"train_examples", job.num_train_examples()},
                             {"eval_examples", job.num_eval_examples()}});
  changed();
  fill_queue_positions({&job});
  return job;
}

std::string JobManager::job_dir(const std::string& id) const {
  return (fs::path(options_.data_dir) / "jobs" / id).string();
}

std::string JobManager::adapter_dir(const std::string& name) const {
  return (fs::path(options_.data_dir) / "adapters" / name).string();
}

void JobManager::fill_queue_positions(std::vector<Job*> jobs) {
  const auto waiting = [](const Job* j) {
    return j->state() == cpm::v1::JOB_STATE_QUEUED || j->state() == cpm::v1::JOB_STATE_PAUSED;
  };
  if (std::none_of(jobs.begin(), jobs.end(), waiting)) return;
  // One read of the line for all of them: the running job and the waiting ones, oldest first.
  auto line = store_.jobs({cpm::v1::JOB_STATE_QUEUED, cpm::v1::JOB_STATE_PAUSED, cpm::v1::JOB_STATE_RUNNING,
                           cpm::v1::JOB_STATE_CANCELLING},
                          std::nullopt, std::numeric_limits<int32_t>::max(), nullptr, true);
  if (!line.ok()) return;
  std::map<std::string, int32_t> position;
  for (const Job& other : *line) position.emplace(other.id(), static_cast<int32_t>(position.size()));
  for (Job* job : jobs) {
    if (!waiting(job)) continue;
    if (auto it = position.find(job->id()); it != position.end()) job->set_queue_position(it->second);
  }
}

absl::StatusOr<Job> JobManager::get(const std::string& id) {
  if (id.empty()) return absl::InvalidArgumentError("id is required: a job id from SubmitJob or ListJobs");
  auto job = store_.job(id);
  if (!job.ok()) return job.status();
  if (!job->has_value()) {
    return absl::NotFoundError(absl::StrCat("job ", id, " is unknown; ListJobs shows them"));
  }
  fill_queue_positions({&**job});
  return **job;
}

absl::StatusOr<cpm::v1::ListJobsResponse> JobManager::list(const cpm::v1::ListJobsRequest& request) {
  std::vector<JobState> states;
  for (int s : request.states()) {
    if (!cpm::v1::JobState_IsValid(s) || s == cpm::v1::JOB_STATE_UNSPECIFIED) {
      return absl::InvalidArgumentError(absl::StrCat("states: ", s, " is not a job state"));
    }
    states.push_back(static_cast<JobState>(s));
  }
  auto page = parse_page(request.page());
  if (!page.ok()) return page.status();
  int64_t total = 0;
  std::optional<JobStore::ListPosition> next;
  auto jobs = store_.jobs(states, page->after, page->size, &total, /*oldest_first=*/false, &next);
  if (!jobs.ok()) return jobs.status();
  std::vector<Job*> listed;
  for (Job& job : *jobs) listed.push_back(&job);
  fill_queue_positions(listed);
  cpm::v1::ListJobsResponse out;
  for (Job& job : *jobs) *out.add_jobs() = std::move(job);
  out.set_total_size(static_cast<int32_t>(total));
  out.set_next_page_token(page_token(next));
  return out;
}

absl::StatusOr<Job> JobManager::cancel(const std::string& id) {
  if (id.empty()) return absl::InvalidArgumentError("id is required: a job id from SubmitJob or ListJobs");
  std::lock_guard<std::mutex> lock(mu_);
  if (active_ && active_->job.id() == id) {
    Job& job = active_->job;
    if (job.state() == cpm::v1::JOB_STATE_RUNNING) {
      CPM_RETURN_IF_ERROR(transition(job, cpm::v1::JOB_STATE_CANCELLING,
                                     "cancel requested; stopping at the next step boundary"));
      active_->control->request(runtime::RunControl::Stop::kCancel);
      cv_.notify_all();
    }
    return job;
  }
  auto stored = store_.job(id);
  if (!stored.ok()) return stored.status();
  if (!stored->has_value()) return absl::NotFoundError(absl::StrCat("job ", id, " is unknown; ListJobs shows them"));
  Job& job = **stored;
  if (is_terminal(job.state())) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", id, " has already ended (", state_label(job.state()), "); nothing to cancel"));
  }
  job.set_error("cancelled by a user before it ran");
  CPM_RETURN_IF_ERROR(transition(job, cpm::v1::JOB_STATE_CANCELLED, "cancelled by a user"));
  validated_.erase(id);
  cv_.notify_all();
  return job;
}

// ---- Scheduling and runs ------------------------------------------------------------------------

void JobManager::schedule_loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    if (model_ready_ && !active_) {
      lock.unlock();
      const bool started = start_next();
      lock.lock();
      if (started) continue;
    }
    const uint64_t seen = version_;
    cv_.wait(lock, [&] { return stopping_ || version_ != seen; });
  }
}

bool JobManager::start_next() {
  auto engine = host_.engine();
  if (!engine.ok()) return false;
  auto control = std::make_shared<runtime::RunControl>();
  std::optional<core::train::LoadedDataset> data;
  Job job;
  {
    // Picked and started under the lock that CancelJob takes, so a job cancelled a moment ago is
    // not started from a stale copy.
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return false;
    auto runnable = store_.jobs({cpm::v1::JOB_STATE_QUEUED, cpm::v1::JOB_STATE_PAUSED}, std::nullopt, 1, nullptr, true);
    if (!runnable.ok()) {
      log_warn("scheduler: cannot read the queue", {{"error", std::string(runnable.status().message())}});
      return false;
    }
    if (runnable->empty()) return false;
    job = runnable->front();
    const JobState from = job.state();
    const std::string reason = from == cpm::v1::JOB_STATE_PAUSED
                                   ? absl::StrCat("resuming from checkpoint step ", job.checkpoint_step())
                                   : "started";
    if (auto s = transition(job, cpm::v1::JOB_STATE_RUNNING, reason); !s.ok()) {
      log_warn("scheduler: cannot start a job", {{"job", job.id()}, {"error", std::string(s.message())}});
      return false;
    }
    active_ = Active{job, control, false};
    if (auto it = validated_.find(job.id()); it != validated_.end()) {
      data = std::move(it->second);
      validated_.erase(it);
    }
  }
  cv_.notify_all();
  const cpm::v1::JobSpec& spec = job.spec();
  absl::Status failed;
  if (!data) {  // submitted before a restart: read and check the data again
    auto file = dataset_file(spec);
    auto builder = example_builder(**engine, spec);
    if (!file.ok()) {
      failed = file.status();
    } else if (!builder.ok()) {
      failed = builder.status();
    } else if (auto loaded = core::train::load_dataset(*file, *builder, data_options(spec)); !loaded.ok()) {
      failed = absl::Status(loaded.status().code(), absl::StrCat("dataset ", *file, ": ", loaded.status().message()));
    } else {
      data = *std::move(loaded);
    }
  }
  if (failed.ok()) {
    runtime::TrainingRunOptions options =
        run_options(spec, job_dir(job.id()),
                    adapter_dir(spec.name()), options_.base_model);
    options.elapsed_seconds = seconds_of(job.progress().elapsed());
    options.tokens_seen = job.progress().tokens_seen();
    auto run = std::make_shared<runtime::TrainingRun>(std::move(data->split), std::move(options),
                                                      std::make_shared<Listener>(*this, job.id()), control);
    std::lock_guard<std::mutex> lock(mu_);
    // A cancel or shutdown that came while the data loaded is seen by the run's first step.
    failed = (*engine)->set_background_task([run](const core::model::LoadedModel& m) { return run->step(m); });
    if (failed.ok()) active_->attached = true;
  }
  if (!failed.ok()) {
    const bool cancelled = control->requested() == runtime::RunControl::Stop::kCancel;
    on_finished(job.id(), cancelled ? cpm::v1::JOB_STATE_CANCELLED : cpm::v1::JOB_STATE_FAILED,
                cancelled ? "cancelled by a user"
                          : absl::StrCat(absl::StatusCodeToString(failed.code()), ": ", failed.message()));
  }
  return true;
}

void JobManager::on_started(const std::string& id, int64_t resumed_from, int64_t total_steps) {
  // Steps after the checkpoint are trained again: their old events go, the new ones replace them.
  if (auto s = store_.drop_events_after(id, resumed_from); !s.ok()) {
    log_warn("job events not trimmed", {{"job", id}, {"error", std::string(s.message())}});
  }
  record(id, [&](Job& job) {
    JobEvent none;
    job.set_checkpoint_step(resumed_from);
    job.mutable_progress()->set_max_steps(total_steps);
    if (job.progress().step() > resumed_from) job.mutable_progress()->set_step(resumed_from);
    return none;
  });
  log_info("job training", {{"job", id}, {"resumed_from", resumed_from}, {"total_steps", total_steps}});
}

void JobManager::record(const std::string& id, const std::function<JobEvent(Job&)>& update) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!active_ || active_->job.id() != id) return;
    Job& job = active_->job;
    JobEvent e = update(job);
    std::vector<JobEvent> events;
    if (e.event_case() != JobEvent::EVENT_NOT_SET) events.push_back(e);
    if (auto s = store_.update_job(job, events); !s.ok()) {
      log_warn("job progress not stored", {{"job", id}, {"error", std::string(s.message())}});
    }
    ++version_;
    if (e.has_progress()) metrics_.progress(job.spec().name(), e.progress());
    if (e.has_eval()) metrics_.eval(job.spec().name(), e.eval());
  }
  cv_.notify_all();
}

void JobManager::on_finished(const std::string& id, JobState to, const std::string& reason) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!active_ || active_->job.id() != id) return;
    Job job = active_->job;
    active_.reset();
    if (to == cpm::v1::JOB_STATE_SUCCEEDED) {
      const std::string& name = job.spec().name();
      const std::string dir = adapter_dir(name);
      auto engine = host_.engine();
      absl::Status registered = engine.ok() ? (*engine)->register_adapter(name, dir).status() : engine.status();
      if (registered.ok()) {
        job.set_adapter_name(name);
      } else {
        to = cpm::v1::JOB_STATE_FAILED;
        job.set_error(absl::StrCat("training finished, but its adapter in ", dir,
                                   " could not be registered: ", registered.message()));
      }
    } else if (to != cpm::v1::JOB_STATE_PAUSED) {
      job.set_error(reason);
    }
    if (auto s = transition(job, to, job.error().empty() ? reason : job.error()); !s.ok()) {
      log_warn("job end not stored", {{"job", id}, {"error", std::string(s.message())}});
    }
  }
  cv_.notify_all();
}

// ---- Shutdown -----------------------------------------------------------------------------------

void JobManager::begin_shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    // The running job checkpoints while in-flight calls finish, not after them.
    if (active_) active_->control->request(runtime::RunControl::Stop::kPause);
  }
  cv_.notify_all();
}

void JobManager::shutdown() {
  std::lock_guard<std::mutex> once(shutdown_mu_);
  begin_shutdown();
  if (scheduler_.joinable()) scheduler_.join();
  std::unique_lock<std::mutex> lock(mu_);
  if (stopped_) return;
  stopped_ = true;
  if (active_ && active_->attached) {
    const std::string id = active_->job.id();
    active_->control->request(runtime::RunControl::Stop::kPause);
    log_info("pausing the running job", {{"job", id}});
    if (!cv_.wait_for(lock, options_.pause_timeout, [&] { return !active_; })) {
      // The engine stops anyway; the next start finds the job RUNNING and pauses it then.
      log_warn("the running job did not pause in time; it resumes from its last checkpoint", {{"job", id}});
    }
  }
}

}  // namespace cpm::server
