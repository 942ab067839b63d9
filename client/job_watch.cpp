// SPDX-License-Identifier: Apache-2.0
#include "job_watch.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "connection.h"
#include "interrupt.h"
#include "job_format.h"
#include "output.h"
#include "progress_line.h"

namespace cpmctl {
namespace {

using cpm::v1::JobEvent;

// What the events said so far.
struct Seen {
  int64_t last_step = -1;
  cpm::v1::JobState state = cpm::v1::JOB_STATE_UNSPECIFIED;
  std::string reason;  // of the last state change, or the snapshot's error
  bool any = false;    // an event arrived
};

std::string checkpoint_line(const cpm::v1::CheckpointSaved& c) {
  return "checkpoint at step " + std::to_string(c.step()) + ": " + c.path() + " (" + human_bytes(c.size_bytes()) +
         ")";
}

void track(const JobEvent& event, Seen& seen) {
  seen.any = true;
  seen.last_step = std::max(seen.last_step, event.step());
  if (event.has_snapshot()) {
    seen.state = event.snapshot().state();
    seen.reason = event.snapshot().error();
    if (event.snapshot().has_progress()) seen.last_step = std::max(seen.last_step, event.snapshot().progress().step());
  } else if (event.has_state_change()) {
    seen.state = event.state_change().to();
    seen.reason = event.state_change().reason();
  } else if (event.has_progress()) {
    seen.last_step = std::max(seen.last_step, event.progress().step());
  }
}

void render(const JobEvent& event, ProgressLine& line, int width) {
  if (event.has_snapshot()) {
    const auto& job = event.snapshot();
    std::string text = "job " + job.id() + " (" + job.spec().name() + "): " + state_word(job.state());
    if (job.state() == cpm::v1::JOB_STATE_QUEUED) text += ", " + std::to_string(job.queue_position()) + " ahead";
    line.print_above(text);
    if (job.has_last_eval()) line.print_above(eval_line(job.last_eval()));
    if (job.has_progress() && !is_terminal(job.state())) line.update(train_progress_line(job.progress(), width));
  } else if (event.has_progress()) {
    line.update(train_progress_line(event.progress(), width));
  } else if (event.has_eval()) {
    line.print_above(eval_line(event.eval()));
  } else if (event.has_state_change()) {
    const auto& c = event.state_change();
    line.print_above("state " + state_word(c.from()) + " -> " + state_word(c.to()) +
                     (c.reason().empty() ? "" : ": " + c.reason()));
  } else if (event.has_checkpoint()) {
    line.print_above(checkpoint_line(event.checkpoint()));
  }
}

}  // namespace

std::string reattach_command(const std::string& job_id, int64_t last_step) {
  if (last_step < 0) return "cpmctl watch " + job_id;
  return "cpmctl watch " + job_id + " --from-step " + std::to_string(last_step + 1);
}

int follow_job(cpm::v1::Training::Stub& stub, const GlobalOptions& global, const WatchRequest& request) {
  cpm::v1::WatchJobRequest watch;
  watch.set_id(request.job_id);
  if (request.from_step) watch.set_from_step(*request.from_step);
  auto context = make_stream_context(global);
  Seen seen;
  if (request.from_step) seen.last_step = *request.from_step - 1;
  grpc::Status status;
  bool interrupted = false;
  {
    CancelOnInterrupt guard(context.get());
    auto reader = stub.WatchJob(context.get(), watch);
    const bool tty = !global.json && isatty(fileno(stdout));
    ProgressLine line(stdout, tty);
    const int width = tty ? terminal_width(stdout) : 0;  // only a redrawn line must fit
    JobEvent event;
    while (reader->Read(&event)) {
      track(event, seen);
      if (global.json) {
        std::printf("%s\n", to_json_line(event).c_str());
        std::fflush(stdout);
      } else {
        render(event, line, width);
      }
    }
    status = reader->Finish();
    interrupted = guard.interrupted();
  }
  if (interrupted) {
    std::fprintf(stderr, "cpmctl: detached from job %s%s; it keeps running. Re-attach: %s\n",
                 request.job_id.c_str(),
                 seen.last_step >= 0 ? (" after step " + std::to_string(seen.last_step)).c_str() : "",
                 reattach_command(request.job_id, seen.last_step).c_str());
    return kExitInterrupted;
  }
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE && seen.any) {
    // The daemon went away mid-watch (a restart, say): the job resumes from its checkpoint when it
    // is back, and the watch can pick up where it stopped.
    std::fprintf(stderr, "cpmctl: lost cpmd at %s while watching job %s (%s); re-attach when it is back: %s\n",
                 global.server.c_str(), request.job_id.c_str(), status.error_message().c_str(),
                 reattach_command(request.job_id, seen.last_step).c_str());
    return kExitUnreachable;
  }
  if (!status.ok()) return report_error(status, global.server, "watch of job " + request.job_id);
  // The stream ends after the terminal event; the job itself names the adapter, and says the state
  // when a replay from a late step carried no state change.
  cpm::v1::Job job;
  cpm::v1::GetJobRequest get;
  get.set_id(request.job_id);
  auto get_context = make_context(global);
  if (stub.GetJob(get_context.get(), get, &job).ok() && is_terminal(job.state())) {
    seen.state = job.state();
    if (seen.reason.empty()) seen.reason = job.error();
  }
  switch (seen.state) {
    case cpm::v1::JOB_STATE_SUCCEEDED:
      if (!global.json && job.adapter_name().empty()) {
        std::printf("job %s succeeded; its adapter is registered (cpmctl adapters)\n", request.job_id.c_str());
      } else if (!global.json) {
        std::printf("job %s succeeded; adapter %s is registered (cpmctl ocr --adapter %s IMAGE)\n",
                    request.job_id.c_str(), job.adapter_name().c_str(), job.adapter_name().c_str());
      }
      return kExitOk;
    case cpm::v1::JOB_STATE_FAILED:
      std::fprintf(stderr, "cpmctl: job %s failed: %s\n", request.job_id.c_str(), seen.reason.c_str());
      return kExitServerError;
    case cpm::v1::JOB_STATE_CANCELLED:
      std::fprintf(stderr, "cpmctl: job %s was cancelled%s%s\n", request.job_id.c_str(),
                   seen.reason.empty() ? "" : ": ", seen.reason.c_str());
      return kExitServerError;
    default:
      std::fprintf(stderr, "cpmctl: the watch of job %s ended while it is %s; re-attach: %s\n",
                   request.job_id.c_str(), state_word(seen.state).c_str(),
                   reattach_command(request.job_id, seen.last_step).c_str());
      return kExitServerError;
  }
}

}  // namespace cpmctl
