// SPDX-License-Identifier: Apache-2.0
#include "jobs_command.h"

#include <cstdio>

#include "connection.h"
#include "cpm/v1/training.grpc.pb.h"
#include "job_format.h"
#include "job_watch.h"
#include "output.h"

namespace cpmctl {
namespace {

using cpm::v1::Training;

int run_list_jobs(const GlobalOptions& global, const JobsOptions& options) {
  cpm::v1::ListJobsRequest request;
  for (const std::string& word : options.states) {
    const auto state = parse_state_word(word);
    if (!state) {
      std::fprintf(stderr,
                   "cpmctl: unknown state '%s'; use queued, running, paused, cancelling, succeeded, failed or "
                   "cancelled\n",
                   word.c_str());
      return kExitUsage;
    }
    request.add_states(*state);
  }
  auto stub = make_stub<Training>(global);
  if (!stub) return kExitUsage;
  cpm::v1::ListJobsResponse all;
  request.mutable_page()->set_page_size(1000);
  do {
    cpm::v1::ListJobsResponse page;
    auto context = make_context(global);
    const grpc::Status status = stub->ListJobs(context.get(), request, &page);
    if (!status.ok()) return report_error(status, global.server, "listing jobs");
    for (auto& job : *page.mutable_jobs()) *all.add_jobs() = std::move(job);
    all.set_total_size(page.total_size());
    request.mutable_page()->set_page_token(page.next_page_token());
  } while (!request.page().page_token().empty());
  if (global.json) {
    std::fputs(to_json(all).c_str(), stdout);
    return kExitOk;
  }
  std::printf("%s\n", jobs_table_header().c_str());
  for (const auto& job : all.jobs()) std::printf("%s\n", jobs_table_row(job).c_str());
  return kExitOk;
}

int run_list_datasets(const GlobalOptions& global) {
  auto stub = make_stub<Training>(global);
  if (!stub) return kExitUsage;
  cpm::v1::ListDatasetsResponse all;
  cpm::v1::ListDatasetsRequest request;
  request.mutable_page()->set_page_size(1000);
  do {
    cpm::v1::ListDatasetsResponse page;
    auto context = make_context(global);
    const grpc::Status status = stub->ListDatasets(context.get(), request, &page);
    if (!status.ok()) return report_error(status, global.server, "listing datasets");
    for (auto& d : *page.mutable_datasets()) *all.add_datasets() = std::move(d);
    request.mutable_page()->set_page_token(page.next_page_token());
  } while (!request.page().page_token().empty());
  if (global.json) {
    std::fputs(to_json(all).c_str(), stdout);
    return kExitOk;
  }
  std::printf("%s\n", datasets_table_header().c_str());
  for (const auto& d : all.datasets()) std::printf("%s\n", datasets_table_row(d).c_str());
  return kExitOk;
}

int run_get_job(const GlobalOptions& global, const std::string& id) {
  auto stub = make_stub<Training>(global);
  if (!stub) return kExitUsage;
  cpm::v1::GetJobRequest request;
  request.set_id(id);
  cpm::v1::Job job;
  auto context = make_context(global);
  const grpc::Status status = stub->GetJob(context.get(), request, &job);
  if (!status.ok()) return report_error(status, global.server, "get of job " + id);
  std::fputs(global.json ? to_json(job).c_str() : job_details(job).c_str(), stdout);
  return kExitOk;
}

int run_cancel(const GlobalOptions& global, const std::string& id) {
  auto stub = make_stub<Training>(global);
  if (!stub) return kExitUsage;
  cpm::v1::CancelJobRequest request;
  request.set_id(id);
  cpm::v1::Job job;
  auto context = make_context(global);
  const grpc::Status status = stub->CancelJob(context.get(), request, &job);
  if (!status.ok()) return report_error(status, global.server, "cancel of job " + id);
  if (global.json) {
    std::fputs(to_json(job).c_str(), stdout);
  } else if (job.state() == cpm::v1::JOB_STATE_CANCELLING) {
    std::printf("job %s is cancelling: it stops at the next step boundary and keeps its last checkpoint\n",
                id.c_str());
  } else {
    std::printf("job %s is %s\n", id.c_str(), state_word(job.state()).c_str());
  }
  return kExitOk;
}

int run_watch(const GlobalOptions& global, const JobsOptions& options) {
  auto stub = make_stub<Training>(global);
  if (!stub) return kExitUsage;
  return follow_job(*stub, global, {options.job_id, options.from_step});
}

}  // namespace

JobsCommands add_jobs_commands(CLI::App& app, JobsOptions& o) {
  JobsCommands c;
  c.jobs = app.add_subcommand("jobs", "List fine-tuning jobs, newest first");
  c.jobs->add_option("--state", o.states,
                     "only jobs in these states: queued, running, paused, cancelling, succeeded, failed, cancelled")
      ->delimiter(',');
  c.jobs->footer("Examples:\n  cpmctl jobs\n  cpmctl jobs --state running,queued --json");

  c.job = app.add_subcommand("job", "Details of one job: state, progress, last evaluation, hyperparameters");
  c.job->add_option("id", o.job_id, "job id")->required();
  c.job->footer("--json prints the Job message; its \"spec\" is a valid `cpmctl train --config` file.\n"
                "Example: cpmctl job 7f3a2c --json");

  c.watch = app.add_subcommand("watch", "Follow a job's progress until it ends (Ctrl-C detaches; the job keeps running)");
  c.watch->add_option("id", o.job_id, "job id")->required();
  c.watch->add_option("--from-step", o.from_step, "replay the recorded events from this step on")
      ->check(CLI::NonNegativeNumber);
  c.watch->footer("Exit 0 when the job succeeds, 1 when it fails or is cancelled, 130 after Ctrl-C.\n"
                  "Example: cpmctl watch 7f3a2c --from-step 200");

  c.cancel = app.add_subcommand("cancel", "Cancel a job (a running one stops at the next step and keeps its checkpoint)");
  c.cancel->add_option("id", o.job_id, "job id")->required();
  c.cancel->footer("Example: cpmctl cancel 7f3a2c");

  c.datasets = app.add_subcommand("datasets", "List the datasets uploaded to cpmd, newest first");
  c.datasets->footer("Example: cpmctl datasets --json");
  return c;
}

int run_jobs_command(const GlobalOptions& global, const JobsCommands& c, const JobsOptions& o) {
  if (c.jobs->parsed()) return run_list_jobs(global, o);
  if (c.job->parsed()) return run_get_job(global, o.job_id);
  if (c.watch->parsed()) return run_watch(global, o);
  if (c.cancel->parsed()) return run_cancel(global, o.job_id);
  return run_list_datasets(global);
}

}  // namespace cpmctl
