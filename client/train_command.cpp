// SPDX-License-Identifier: Apache-2.0
#include "train_command.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <functional>

#include "connection.h"
#include "cpm/v1/training.grpc.pb.h"
#include "dataset_upload.h"
#include "job_format.h"
#include "job_watch.h"
#include "output.h"
#include "progress_line.h"

namespace cpmctl {
namespace {

// Problems in the data exit 1 (as `dataset check`); files and flags exit 2.
int local_failure(const absl::Status& status) {
  std::fprintf(stderr, "cpmctl: %s\n", std::string(status.message()).c_str());
  return absl::IsInvalidArgument(status) ? kExitServerError : kExitUsage;
}

// Uploads `options.dataset` and returns its id, or the exit code of the failure.
int upload(cpm::v1::Training::Stub& stub, const GlobalOptions& global, const TrainOptions& options,
           const cpm::v1::JobSpec& spec, std::string* dataset_id) {
  auto plan = plan_upload(options.dataset, options.dataset_name, spec.data().format(),
                          spec.data().skip_bad_records());
  if (!plan.ok()) return local_failure(plan.status());
  for (const auto& s : plan->skipped) std::fprintf(stderr, "cpmctl: skipping %s\n", s.c_str());

  const bool tty = isatty(fileno(stderr)) != 0;
  ProgressLine line(stderr, tty);
  const int width = terminal_width(stderr);
  const auto start = std::chrono::steady_clock::now();
  auto last_draw = start - std::chrono::seconds(1);
  std::function<void(int64_t, int64_t)> progress;
  if (tty) {
    progress = [&](int64_t sent, int64_t total) {
      const auto now = std::chrono::steady_clock::now();
      if (sent < total && now - last_draw < std::chrono::milliseconds(100)) return;
      last_draw = now;
      line.update(upload_progress_line(sent, total, std::chrono::duration<double>(now - start).count(), width));
    };
  }
  cpm::v1::Dataset dataset;
  const grpc::Status status = upload_dataset(stub, global, *plan, progress, &dataset);
  line.finish();
  if (status.error_code() == grpc::StatusCode::ABORTED) {  // a local file went away
    std::fprintf(stderr, "cpmctl: %s\n", status.error_message().c_str());
    return kExitUsage;
  }
  if (!status.ok()) return report_error(status, global.server, "upload of " + options.dataset);
  std::fprintf(stderr, "cpmctl: uploaded %s as dataset %s (%lld records, %lld files, %s)\n", options.dataset.c_str(),
               dataset.id().c_str(), static_cast<long long>(dataset.num_records()),
               static_cast<long long>(dataset.num_files()), human_bytes(dataset.size_bytes()).c_str());
  *dataset_id = dataset.id();
  return kExitOk;
}

}  // namespace

CLI::App* add_train_command(CLI::App& app, TrainOptions& o) {
  CLI::App* cmd = app.add_subcommand(
      "train", "Fine-tune a LoRA adapter: upload a local dataset (or use an uploaded one), submit the job, print its id");
  cmd->add_option("dataset", o.dataset,
                  "local dataset: the recipe's conversation JSON/JSONL or an image_path,text CSV; it and the images "
                  "it names are uploaded");
  cmd->add_option("--dataset-id", o.dataset_id, "an uploaded dataset (cpmctl datasets) instead of a local file")
      ->excludes("dataset");
  cmd->add_option("--dataset-path", o.dataset_path, "a dataset file on the daemon host, under its dataset roots")
      ->excludes("dataset")
      ->excludes("--dataset-id");
  cmd->add_option("--dataset-name", o.dataset_name, "name of the upload (default: the file's name)");
  cmd->add_option("--config", o.config_file,
                  "a JobSpec as .json or .yaml (training.proto's field names, as `cpmctl job ID --json` shows "
                  "under \"spec\"); flags override it");
  cmd->add_flag("--validate-only", o.validate_only, "check the spec and the dataset, and start nothing");
  cmd->add_flag("--follow,-f", o.follow, "watch the job until it ends (Ctrl-C detaches; the job keeps running)");
  add_job_spec_flags(cmd, o.spec);
  cmd->footer(
      "Prints the job id (with --json, the Job). Defaults are the MiniCPM-o fine-tuning recipe's; the daemon fills "
      "them in, and `cpmctl job ID` shows them.\n"
      "Examples:\n"
      "  cpmctl train data/train.json --max-steps 500 --lr 1e-5 --name latex-r64 --follow\n"
      "  cpmctl train --dataset-id 3f9c0a --config spec.yaml --lora-r 16\n"
      "  cpmctl train data/labels.csv --eval-size 100 --validate-only");
  return cmd;
}

int run_train(const GlobalOptions& global, const TrainOptions& options) {
  cpm::v1::JobSpec spec;
  if (!options.config_file.empty()) {
    auto read = read_job_spec_file(options.config_file);
    if (!read.ok()) {
      std::fprintf(stderr, "cpmctl: %s\n", std::string(read.status().message()).c_str());
      return kExitUsage;
    }
    spec = std::move(*read);
  }
  if (absl::Status s = apply_job_spec_flags(options.spec, &spec); !s.ok()) {
    std::fprintf(stderr, "cpmctl: %s\n", std::string(s.message()).c_str());
    return kExitUsage;
  }
  if (!options.dataset_id.empty()) spec.set_dataset_id(options.dataset_id);
  if (!options.dataset_path.empty()) spec.set_dataset_path(options.dataset_path);
  if (options.dataset.empty() && spec.dataset_case() == cpm::v1::JobSpec::DATASET_NOT_SET) {
    std::fprintf(stderr, "cpmctl: train needs a dataset: a local file, --dataset-id ID or --dataset-path PATH; "
                         "see cpmctl train --help\n");
    return kExitUsage;
  }

  auto stub = make_stub<cpm::v1::Training>(global);
  if (!stub) return kExitUsage;
  if (!options.dataset.empty()) {
    std::string id;
    if (const int rc = upload(*stub, global, options, spec, &id); rc != kExitOk) return rc;
    spec.set_dataset_id(id);
  }

  cpm::v1::SubmitJobRequest request;
  *request.mutable_spec() = spec;
  request.set_validate_only(options.validate_only);
  cpm::v1::Job job;
  // No deadline: the daemon reads every image of the dataset before it answers.
  auto context = make_stream_context(global);
  const grpc::Status status = stub->SubmitJob(context.get(), request, &job);
  if (!status.ok()) return report_error(status, global.server, options.validate_only ? "validation" : "submit");
  if (options.validate_only) {
    std::fputs(global.json ? (to_json_line(job) + "\n").c_str() : job_details(job).c_str(), stdout);
    if (!global.json) std::printf("valid: nothing was started\n");
    return kExitOk;
  }
  if (global.json) {
    std::printf("%s\n", to_json_line(job).c_str());
  } else {
    std::printf("%s\n", job.id().c_str());
  }
  std::fflush(stdout);
  if (!options.follow) {
    std::fprintf(stderr, "cpmctl: job %s (%s) is %s; follow it: cpmctl watch %s\n", job.id().c_str(),
                 job.spec().name().c_str(), state_word(job.state()).c_str(), job.id().c_str());
    return kExitOk;
  }
  return follow_job(*stub, global, {job.id(), std::nullopt});
}

}  // namespace cpmctl
