// SPDX-License-Identifier: Apache-2.0
#include "job_format.h"

#include <algorithm>
#include <cstdio>
#include <ctime>

#include "output.h"

namespace cpmctl {
namespace {

using cpm::v1::JobState;

// "4m 12s ago", or "-" for an unset timestamp.
std::string ago(const google::protobuf::Timestamp& t) {
  if (t.seconds() == 0 && t.nanos() == 0) return "-";
  return human_duration(std::max<int64_t>(0, std::time(nullptr) - t.seconds())) + " ago";
}

std::string timestamp(const google::protobuf::Timestamp& t) {
  if (t.seconds() == 0 && t.nanos() == 0) return "-";
  const std::time_t seconds = t.seconds();
  std::tm tm{};
  localtime_r(&seconds, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return std::string(buf) + " (" + ago(t) + ")";
}

const char* schedule_word(cpm::v1::LrSchedule s) {
  switch (s) {
    case cpm::v1::LR_SCHEDULE_LINEAR:
      return "linear";
    case cpm::v1::LR_SCHEDULE_CONSTANT:
      return "constant";
    default:
      return "cosine";
  }
}

const char* precision_word(cpm::v1::Precision p) {
  switch (p) {
    case cpm::v1::PRECISION_BF16:
      return "bf16";
    case cpm::v1::PRECISION_FP16:
      return "fp16";
    case cpm::v1::PRECISION_FP32:
      return "fp32";
    default:
      return "auto";
  }
}

}  // namespace

std::string state_word(JobState state) {
  switch (state) {
    case cpm::v1::JOB_STATE_QUEUED:
      return "queued";
    case cpm::v1::JOB_STATE_RUNNING:
      return "running";
    case cpm::v1::JOB_STATE_PAUSED:
      return "paused";
    case cpm::v1::JOB_STATE_CANCELLING:
      return "cancelling";
    case cpm::v1::JOB_STATE_SUCCEEDED:
      return "succeeded";
    case cpm::v1::JOB_STATE_FAILED:
      return "failed";
    case cpm::v1::JOB_STATE_CANCELLED:
      return "cancelled";
    default:
      return "unknown";
  }
}

std::optional<JobState> parse_state_word(const std::string& word) {
  std::string lower = word;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  for (int s = cpm::v1::JOB_STATE_QUEUED; s <= cpm::v1::JOB_STATE_CANCELLED; ++s) {
    if (state_word(static_cast<JobState>(s)) == lower) return static_cast<JobState>(s);
  }
  return std::nullopt;
}

bool is_terminal(JobState state) {
  return state == cpm::v1::JOB_STATE_SUCCEEDED || state == cpm::v1::JOB_STATE_FAILED ||
         state == cpm::v1::JOB_STATE_CANCELLED;
}

std::string jobs_table_header() {
  char buf[160];
  std::snprintf(buf, sizeof buf, "%-20s %-24s %-10s %13s %9s %10s %14s", "ID", "NAME", "STATE", "STEP", "LOSS",
                "EXACT", "CREATED");
  return buf;
}

std::string jobs_table_row(const cpm::v1::Job& job) {
  const auto& p = job.progress();
  const std::string step = std::to_string(p.step()) + "/" + std::to_string(job.spec().max_steps());
  char loss[32] = "-", exact[32] = "-";
  if (job.has_progress()) std::snprintf(loss, sizeof loss, "%.4f", p.loss());
  if (job.has_last_eval()) std::snprintf(exact, sizeof exact, "%.1f%%", 100 * job.last_eval().exact_match());
  char buf[256];
  std::snprintf(buf, sizeof buf, "%-20s %-24s %-10s %13s %9s %10s %14s", job.id().c_str(),
                job.spec().name().c_str(), state_word(job.state()).c_str(), step.c_str(), loss, exact,
                ago(job.create_time()).c_str());
  return buf;
}

std::string eval_line(const cpm::v1::EvalResult& e) {
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "eval at step %lld: loss %.4f  exact match %.1f%%  edit distance %.4f  BLEU-4 %.4f  (%d example%s, %s)",
                static_cast<long long>(e.step()), e.eval_loss(), 100 * e.exact_match(), e.edit_distance(), e.bleu4(),
                e.num_examples(), e.num_examples() == 1 ? "" : "s", human_duration(e.duration().seconds()).c_str());
  return buf;
}

std::string job_details(const cpm::v1::Job& job) {
  std::string out;
  auto row = [&out](const char* key, const std::string& value) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%-16s", key);
    out += buf + value + "\n";
  };
  const auto& s = job.spec();
  row("id", job.id());
  row("name", s.name());
  std::string state = state_word(job.state());
  if (job.state() == cpm::v1::JOB_STATE_QUEUED) state += " (" + std::to_string(job.queue_position()) + " ahead)";
  row("state", state);
  if (!job.error().empty()) row("error", job.error());
  row("dataset", s.has_dataset_id() ? "id " + s.dataset_id() : s.dataset_path());
  char buf[256];
  std::snprintf(buf, sizeof buf, "%lld train, %lld eval, %lld bad records skipped",
                static_cast<long long>(job.num_train_examples()), static_cast<long long>(job.num_eval_examples()),
                static_cast<long long>(job.num_skipped_records()));
  row("examples", buf);
  if (job.has_progress()) {
    const auto& p = job.progress();
    std::snprintf(buf, sizeof buf, "step %lld/%lld, epoch %.2f, loss %.4f, lr %.3g, grad norm %.3f, %.0f tok/s",
                  static_cast<long long>(p.step()), static_cast<long long>(p.max_steps()), p.epoch(), p.loss(),
                  p.learning_rate(), p.grad_norm(), p.tokens_per_second());
    row("progress", buf);
    std::snprintf(buf, sizeof buf, "%s elapsed, ETA %s, %lld tokens seen, peak memory %s",
                  human_duration(p.elapsed().seconds()).c_str(), human_duration(p.eta().seconds()).c_str(),
                  static_cast<long long>(p.tokens_seen()), human_bytes(p.peak_memory_bytes()).c_str());
    row("", buf);
  }
  if (job.has_last_eval()) row("last eval", eval_line(job.last_eval()));
  row("checkpoint", job.checkpoint_step() > 0 ? "step " + std::to_string(job.checkpoint_step()) : "none yet");
  if (!job.adapter_name().empty()) row("adapter", job.adapter_name());
  row("created", timestamp(job.create_time()));
  row("started", timestamp(job.start_time()));
  row("ended", timestamp(job.end_time()));
  std::snprintf(buf, sizeof buf, "r %d, alpha %g, dropout %g%s%s", s.lora().r(), s.lora().alpha(), s.lora().dropout(),
                s.lora().use_rslora() ? ", rsLoRA" : "", s.lora().use_lora() ? "" : " (LoRA off)");
  row("lora", buf);
  std::snprintf(buf, sizeof buf, "lr %g (%s, warmup %g / %lld steps), weight decay %g, betas %g/%g, clip %g",
                s.optimizer().learning_rate(), schedule_word(s.optimizer().lr_schedule()),
                s.optimizer().warmup_ratio(), static_cast<long long>(s.optimizer().warmup_steps()),
                s.optimizer().weight_decay(), s.optimizer().adam_beta1(), s.optimizer().adam_beta2(),
                s.optimizer().max_grad_norm());
  row("optimizer", buf);
  std::snprintf(buf, sizeof buf,
                "%lld steps, batch %d x %d, %s, vision %s, checkpoint every %lld, eval every %lld, seed %lld",
                static_cast<long long>(s.max_steps()), s.batch_size(), s.gradient_accumulation_steps(),
                precision_word(s.precision()), s.tune_vision() ? "trained" : "frozen",
                static_cast<long long>(s.save_steps()), static_cast<long long>(s.eval_steps()),
                static_cast<long long>(s.seed()));
  row("loop", buf);
  for (const auto& [k, v] : s.labels()) row("label", k + "=" + v);
  return out;
}

std::string datasets_table_header() {
  char buf[160];
  std::snprintf(buf, sizeof buf, "%-20s %-28s %-6s %9s %7s %10s %14s", "ID", "NAME", "FORMAT", "RECORDS", "FILES",
                "SIZE", "CREATED");
  return buf;
}

std::string datasets_table_row(const cpm::v1::Dataset& d) {
  const char* format = d.format() == cpm::v1::DATASET_FORMAT_CSV                 ? "csv"
                       : d.format() == cpm::v1::DATASET_FORMAT_CONVERSATION_JSON ? "json"
                                                                                 : "-";
  char buf[256];
  std::snprintf(buf, sizeof buf, "%-20s %-28s %-6s %9lld %7lld %10s %14s", d.id().c_str(), d.name().c_str(), format,
                static_cast<long long>(d.num_records()), static_cast<long long>(d.num_files()),
                human_bytes(d.size_bytes()).c_str(), ago(d.create_time()).c_str());
  return buf;
}

}  // namespace cpmctl
