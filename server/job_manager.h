// SPDX-License-Identifier: Apache-2.0
//
// Fine-tuning jobs: their life from submission to a registered adapter, kept in the job store so
// that a restart (even after kill -9) finds every job in its true state.
//
//   SubmitJob -> QUEUED --scheduler--> RUNNING --> SUCCEEDED (adapter registered as the job's name)
//                  |                      |    \-> FAILED
//                  |                      |--CancelJob--> CANCELLING --next step--> CANCELLED
//                  \--CancelJob--> CANCELLED   \--daemon stops--> PAUSED --next start--> RUNNING
//
// One job runs at a time, in submission order (a PAUSED job keeps its place). The scheduler thread
// loads the job's data, then hands a core::runtime::TrainingRun to the engine as its background
// task; the run reports back on the engine thread, and each report is written to the store (job
// and event in one transaction) before watchers see it. A run resumed after a crash repeats the
// steps after its last checkpoint, so their events are dropped and recorded again: the history of
// a job never has a gap or a duplicate step.
//
// On-disk layout under the data directory: jobs/<id>/checkpoint-<step>/ (checkpoints),
// adapters/<name>/ (finished adapters), datasets/<id>/ (uploads, see dataset_upload.h).
#pragma once

#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "cpm/v1/training.pb.h"
#include "job_store.h"
#include "path_roots.h"
#include "train/dataset.h"

namespace cpm::core::runtime {
class RunControl;
}  // namespace cpm::core::runtime

namespace cpm::server {

class ModelHost;
class TrainingMetrics;

struct JobManagerOptions {
  std::string data_dir;  // absolute
  // Folders that SubmitJob's dataset_path must lie in (symlinks resolved). Empty: <data_dir>/datasets.
  std::vector<std::string> dataset_roots;
  // Recorded as base_model_name_or_path in the adapters' configs.
  std::string base_model;
  // How long shutdown() waits for the running job to checkpoint and pause.
  std::chrono::seconds pause_timeout{300};
};

// Thread-safe.
class JobManager {
 public:
  // Jobs that were RUNNING when the daemon last stopped become PAUSED (they resume first),
  // CANCELLING ones CANCELLED. Starts the scheduler thread, which waits for the model.
  static absl::StatusOr<std::unique_ptr<JobManager>> start(JobStore& store, ModelHost& host,
                                                           TrainingMetrics& metrics,
                                                           JobManagerOptions options);
  ~JobManager();  // shutdown()
  JobManager(const JobManager&) = delete;
  JobManager& operator=(const JobManager&) = delete;

  // The model is serving: registers the adapters of finished jobs and lets the scheduler run.
  void on_model_ready();

  absl::StatusOr<cpm::v1::Job> submit(const cpm::v1::SubmitJobRequest& request);
  absl::StatusOr<cpm::v1::Job> get(const std::string& id);
  absl::StatusOr<cpm::v1::ListJobsResponse> list(const cpm::v1::ListJobsRequest& request);
  absl::StatusOr<cpm::v1::Job> cancel(const std::string& id);
  // Streams the job's events through `send` (false: the client is gone) until the job reaches a
  // terminal state (OK), `gone()` turns true (CANCELLED) or the daemon shuts down (UNAVAILABLE,
  // saying how to re-attach). Blocks the calling thread.
  absl::Status watch(const cpm::v1::WatchJobRequest& request,
                     const std::function<bool(const cpm::v1::JobEvent&)>& send,
                     const std::function<bool()>& gone);

  // Watches end at once, and new work is refused with UNAVAILABLE.
  void begin_shutdown();
  // begin_shutdown(), then the running job checkpoints and pauses (it resumes when cpmd starts
  // again), and the scheduler stops. Before the engine stops. Idempotent.
  void shutdown();

 private:
  class Listener;
  struct Active {
    cpm::v1::Job job;  // the running job as stored
    std::shared_ptr<core::runtime::RunControl> control;
    bool attached = false;  // the engine runs it (else the scheduler is still loading its data)
  };

  JobManager(JobStore& store, ModelHost& host, TrainingMetrics& metrics, JobManagerOptions options,
             PathRoots dataset_roots);
  absl::Status recover();
  void schedule_loop();
  // Starts the oldest runnable job, if any. Returns false when there is nothing to start.
  bool start_next();
  absl::StatusOr<std::string> dataset_file(const cpm::v1::JobSpec& spec);
  // Moves the active job (or `job`) to `to`, storing it with a state-change event; mu_ held.
  absl::Status transition(cpm::v1::Job& job, cpm::v1::JobState to, const std::string& reason,
                          std::vector<cpm::v1::JobEvent> more = {}) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void fill_queue_positions(std::vector<cpm::v1::Job*> jobs);
  std::string job_dir(const std::string& id) const;         // its checkpoints
  std::string adapter_dir(const std::string& name) const;  // a finished job's adapter
  void changed();  // wakes the scheduler and the watchers

  // Run reports (engine thread).
  void on_started(const std::string& id, int64_t resumed_from, int64_t total_steps);
  void record(const std::string& id, const std::function<cpm::v1::JobEvent(cpm::v1::Job&)>& update);
  void on_finished(const std::string& id, cpm::v1::JobState to, const std::string& reason);

  JobStore& store_;
  ModelHost& host_;
  TrainingMetrics& metrics_;
  const JobManagerOptions options_;
  const PathRoots dataset_roots_;

  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t version_ ABSL_GUARDED_BY(mu_) = 0;  // bumped by every stored change
  bool model_ready_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<Active> active_ ABSL_GUARDED_BY(mu_);
  // Datasets loaded while validating a submission, kept for the job's start.
  std::map<std::string, core::train::LoadedDataset> validated_ ABSL_GUARDED_BY(mu_);
  std::mutex shutdown_mu_;
  std::thread scheduler_;
};

}  // namespace cpm::server
