// SPDX-License-Identifier: Apache-2.0
//
// JobManager::watch: a job's history from the store, then its live events.
#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "job_events.h"
#include "job_manager.h"

namespace cpm::server {

using cpm::v1::JobEvent;

absl::Status JobManager::watch(const cpm::v1::WatchJobRequest& request,
                               const std::function<bool(const JobEvent&)>& send,
                               const std::function<bool()>& gone) {
  const std::string& id = request.id();
  auto before = store_.last_seq(id);
  if (!before.ok()) return before.status();
  auto job = get(id);
  if (!job.ok()) return job.status();
  // With from_step N the watcher has seen progress up to N - 1: it gets everything recorded after
  // that progress event (checkpoints, evaluations and state changes stamped with the same step
  // included), except progress of steps it has seen, which a resumed job records again.
  const int64_t from_step = request.has_from_step() ? request.from_step() : 0;
  const auto wanted = [from_step](const JobEvent& e) { return !(e.has_progress() && e.step() < from_step); };
  const auto ends = [](const JobEvent& e) { return e.has_state_change() && is_terminal(e.state_change().to()); };
  int64_t cursor = *before;
  int64_t last_step = job->progress().step();
  if (request.has_from_step()) {
    auto history = store_.events(id, 0);
    if (!history.ok()) return history.status();
    int64_t seen = 0;  // seq of the newest progress event before from_step
    for (const auto& [seq, event] : *history) {
      if (event.has_progress() && event.step() < from_step) seen = seq;
    }
    for (const auto& [seq, event] : *history) {
      cursor = std::max(cursor, seq);
      if (seq <= seen || !wanted(event)) continue;
      if (!send(event)) return absl::CancelledError("the watcher went away");
      last_step = std::max(last_step, event.step());
      if (ends(event)) return absl::OkStatus();
    }
  } else {
    JobEvent snapshot = event_for(*job, job->progress().step());
    *snapshot.mutable_snapshot() = *job;
    if (!send(snapshot)) return absl::CancelledError("the watcher went away");
    if (is_terminal(job->state())) return absl::OkStatus();
  }
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      const uint64_t version = version_;
      cv_.wait_for(lock, std::chrono::milliseconds(500), [&] { return version_ != version || stopping_; });
      if (stopping_) {
        return absl::UnavailableError(absl::StrCat("cpmd is shutting down; watch again with from_step ",
                                                   last_step + 1, " once it is back"));
      }
    }
    if (gone()) return absl::CancelledError("the watcher went away");
    auto fresh = store_.events(id, cursor);
    if (!fresh.ok()) return fresh.status();
    for (const auto& [seq, event] : *fresh) {
      cursor = seq;
      if (!wanted(event)) continue;
      if (!send(event)) return absl::CancelledError("the watcher went away");
      last_step = std::max(last_step, event.step());
      if (ends(event)) return absl::OkStatus();
    }
  }
}

}  // namespace cpm::server
