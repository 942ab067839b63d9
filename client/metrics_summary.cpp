// SPDX-License-Identifier: Apache-2.0
#include "metrics_summary.h"

#include <cstdio>
#include <ctime>
#include <set>

#include "output.h"

namespace cpmctl {
namespace {

using Json = nlohmann::ordered_json;

bool has(const std::vector<Sample>& samples, const std::string& name) {
  for (const Sample& s : samples) {
    if (s.name == name) return true;
  }
  return false;
}

double total(const std::vector<Sample>& samples, const std::string& name, const Labels& match = {}) {
  const auto sums = sum_by(samples, name, {}, match);
  return sums.empty() ? 0 : sums.begin()->second;
}

// count, mean and p50 / p90 / p99 of a histogram; null without observations.
Json latency(const std::vector<Sample>& samples, const std::string& name, const Labels& match = {}) {
  const HistogramData h = histogram(samples, name, match);
  if (h.count <= 0) return nullptr;
  Json j = {{"count", h.count}, {"mean", h.sum / h.count}};
  for (const auto& [key, q] : {std::pair{"p50", 0.5}, {"p90", 0.9}, {"p99", 0.99}}) {
    const auto v = histogram_quantile(q, h);
    j[key] = v ? Json(*v) : Json(nullptr);
  }
  return j;
}

// {label value: sum} of one family.
Json by_label(const std::vector<Sample>& samples, const std::string& name, const std::string& label) {
  Json j = Json::object();
  for (const auto& [key, value] : sum_by(samples, name, {label})) j[key[0]] = value;
  return j;
}

Json requests(const std::vector<Sample>& samples) {
  Json grpc = Json::array();
  const auto started = sum_by(samples, "grpc_server_started_total", {"grpc_service", "grpc_method"});
  for (const auto& [key, count] : started) {
    if (count <= 0) continue;
    const Labels match = {{"grpc_service", key[0]}, {"grpc_method", key[1]}};
    Json codes = Json::object();
    double errors = 0;
    for (const auto& [code, n] : sum_by(samples, "grpc_server_handled_total", {"grpc_code"}, match)) {
      if (n <= 0) continue;
      codes[code[0]] = n;
      if (code[0] != "OK") errors += n;
    }
    grpc.push_back({{"method", key[0] + "/" + key[1]},
                    {"started", count},
                    {"errors", errors},
                    {"by_code", codes},
                    {"latency_seconds", latency(samples, "grpc_server_handling_seconds", match)}});
  }
  Json out = {{"grpc", grpc}};
  if (has(samples, "cpm_ocr_requests_total")) {
    out["ocr"] = {{"total", total(samples, "cpm_ocr_requests_total")},
                  {"by_code", by_label(samples, "cpm_ocr_requests_total", "code")},
                  {"by_adapter", by_label(samples, "cpm_ocr_requests_total", "adapter")}};
  }
  return out;
}

Json ocr_latency(const std::vector<Sample>& samples) {
  Json j = Json::object();
  for (const auto& [key, name] :
       {std::pair{"time_to_first_token", "cpm_ocr_time_to_first_token_seconds"},
        {"time_per_output_token", "cpm_ocr_time_per_output_token_seconds"},
        {"queue", "cpm_ocr_request_queue_time_seconds"},
        {"prefill", "cpm_ocr_request_prefill_time_seconds"},
        {"decode", "cpm_ocr_request_decode_time_seconds"}}) {
    if (has(samples, std::string(name) + "_count")) j[key] = latency(samples, name);
  }
  return j;
}

Json training(const std::vector<Sample>& samples) {
  Json jobs = Json::array();
  std::set<std::string> ids;
  for (const Sample& s : samples) {
    // The label is train_job: Prometheus's own `job` label names the scrape target.
    if (s.name == "cpm_train_step" && s.labels.count("train_job")) ids.insert(s.labels.at("train_job"));
  }
  for (const std::string& id : ids) {
    Json job = {{"job", id}};
    for (const auto& [key, name] : {std::pair{"step", "cpm_train_step"},
                                    {"max_steps", "cpm_train_max_steps"},
                                    {"loss", "cpm_train_loss"},
                                    {"learning_rate", "cpm_train_learning_rate"},
                                    {"tokens_per_second", "cpm_train_tokens_per_second"},
                                    {"eval_loss", "cpm_train_eval_loss"},
                                    {"eval_exact_match", "cpm_train_eval_exact_match"}}) {
      if (has(samples, name)) job[key] = total(samples, name, {{"train_job", id}});
    }
    jobs.push_back(job);
  }
  return {{"jobs_by_state", by_label(samples, "cpm_train_jobs", "state")},
          {"finished_by_state", by_label(samples, "cpm_train_jobs_finished_total", "state")},
          {"jobs", jobs}};
}

std::string seconds_text(const Json& v) {
  if (!v.is_number()) return "-";
  const double s = v.get<double>();
  char buf[32];
  if (s < 1) {
    std::snprintf(buf, sizeof buf, "%.1f ms", s * 1e3);
  } else {
    std::snprintf(buf, sizeof buf, "%.2f s", s);
  }
  return buf;
}

std::string latency_text(const Json& l) {
  if (!l.is_object()) return "no observations";
  char buf[160];
  std::snprintf(buf, sizeof buf, "p50 %s  p90 %s  p99 %s  (mean %s, %.0f)", seconds_text(l["p50"]).c_str(),
                seconds_text(l["p90"]).c_str(), seconds_text(l["p99"]).c_str(), seconds_text(l["mean"]).c_str(),
                l["count"].get<double>());
  return buf;
}

std::string counts_text(const Json& by) {
  std::string out;
  for (const auto& [k, v] : by.items()) {
    if (v.get<double>() == 0) continue;
    char buf[64];
    std::snprintf(buf, sizeof buf, "%s%s %.0f", out.empty() ? "" : ", ", k.empty() ? "(base)" : k.c_str(),
                  v.get<double>());
    out += buf;
  }
  return out.empty() ? "none" : out;
}

}  // namespace

Json summarize_metrics(const std::vector<Sample>& samples) {
  Json j;
  j["requests"] = requests(samples);
  j["ocr_latency_seconds"] = ocr_latency(samples);
  if (has(samples, "cpm_ocr_queue_depth")) {
    j["queue"] = {{"depth", total(samples, "cpm_ocr_queue_depth")},
                  {"capacity", total(samples, "cpm_ocr_queue_capacity")},
                  {"running", total(samples, "cpm_ocr_requests_running")}};
    j["tokens"] = {{"prompt", total(samples, "cpm_ocr_prompt_tokens_total")},
                   {"generated", total(samples, "cpm_ocr_generation_tokens_total")}};
  }
  if (has(samples, "cpm_adapters_loaded")) {
    j["adapters"] = {{"loaded", total(samples, "cpm_adapters_loaded")},
                     {"device_bytes", total(samples, "cpm_adapter_device_bytes")},
                     {"device_budget_bytes", total(samples, "cpm_adapter_device_budget_bytes")},
                     {"loads", total(samples, "cpm_adapter_loads_total")},
                     {"unloads", total(samples, "cpm_adapter_unloads_total")},
                     {"evictions", total(samples, "cpm_adapter_evictions_total")}};
  }
  Json gpus = Json::array();
  for (const auto& [device, allocated] : sum_by(samples, "cpm_gpu_memory_allocated_bytes", {"device"})) {
    const Labels match = {{"device", device[0]}};
    gpus.push_back({{"device", device[0]},
                    {"allocated_bytes", allocated},
                    {"reserved_bytes", total(samples, "cpm_gpu_memory_reserved_bytes", match)},
                    {"total_bytes", total(samples, "cpm_gpu_memory_total_bytes", match)}});
  }
  j["gpu_memory"] = gpus;
  if (has(samples, "cpm_train_jobs") || has(samples, "cpm_train_step")) j["training"] = training(samples);
  const double start = total(samples, "process_start_time_seconds");
  j["process"] = {{"resident_memory_bytes", total(samples, "process_resident_memory_bytes")},
                  {"cpu_seconds", total(samples, "process_cpu_seconds_total")},
                  {"threads", total(samples, "process_threads")},
                  {"uptime_seconds", start > 0 ? static_cast<double>(std::time(nullptr)) - start : 0.0}};
  return j;
}

std::string format_metrics_summary(const Json& j) {
  std::string out;
  char buf[512];
  const Json& r = j["requests"];
  out += "requests\n";
  for (const Json& m : r["grpc"]) {
    std::snprintf(buf, sizeof buf, "  %-36s %8.0f started, %.0f errors; %s\n",
                  m["method"].get<std::string>().c_str(), m["started"].get<double>(),
                  m["errors"].get<double>(), latency_text(m["latency_seconds"]).c_str());
    out += buf;
  }
  if (r["grpc"].empty()) out += "  none yet\n";
  if (r.contains("ocr")) {
    out += "  ocr by code: " + counts_text(r["ocr"]["by_code"]) + "; by adapter: " +
           counts_text(r["ocr"]["by_adapter"]) + "\n";
  }
  if (!j["ocr_latency_seconds"].empty()) {
    out += "ocr latency\n";
    for (const auto& [k, v] : j["ocr_latency_seconds"].items()) {
      std::snprintf(buf, sizeof buf, "  %-22s %s\n", k.c_str(), latency_text(v).c_str());
      out += buf;
    }
  }
  if (j.contains("queue")) {
    const Json& q = j["queue"];
    std::snprintf(buf, sizeof buf, "queue     %.0f waiting of %.0f, %.0f running; tokens %.0f prompt, %.0f generated\n",
                  q["depth"].get<double>(), q["capacity"].get<double>(), q["running"].get<double>(),
                  j["tokens"]["prompt"].get<double>(), j["tokens"]["generated"].get<double>());
    out += buf;
  }
  if (j.contains("adapters")) {
    const Json& a = j["adapters"];
    const double budget = a["device_budget_bytes"].get<double>();
    std::snprintf(buf, sizeof buf, "adapters  %.0f loaded, %s on device (budget %s); %.0f loads, %.0f unloads, %.0f evictions\n",
                  a["loaded"].get<double>(), human_bytes(static_cast<int64_t>(a["device_bytes"].get<double>())).c_str(),
                  budget > 0 ? human_bytes(static_cast<int64_t>(budget)).c_str() : "none",
                  a["loads"].get<double>(), a["unloads"].get<double>(), a["evictions"].get<double>());
    out += buf;
  }
  for (const Json& g : j["gpu_memory"]) {
    std::snprintf(buf, sizeof buf, "gpu       %s: %s allocated, %s reserved, %s total\n",
                  g["device"].get<std::string>().c_str(),
                  human_bytes(static_cast<int64_t>(g["allocated_bytes"].get<double>())).c_str(),
                  human_bytes(static_cast<int64_t>(g["reserved_bytes"].get<double>())).c_str(),
                  human_bytes(static_cast<int64_t>(g["total_bytes"].get<double>())).c_str());
    out += buf;
  }
  if (j.contains("training")) {
    const Json& t = j["training"];
    out += "training  jobs by state: " + counts_text(t["jobs_by_state"]) + "\n";
    for (const Json& job : t["jobs"]) {
      std::snprintf(buf, sizeof buf, "  %-24s step %.0f/%.0f  loss %.4f  lr %.3g  %.0f tok/s\n",
                    job["job"].get<std::string>().c_str(), job.value("step", 0.0), job.value("max_steps", 0.0),
                    job.value("loss", 0.0), job.value("learning_rate", 0.0), job.value("tokens_per_second", 0.0));
      out += buf;
    }
  }
  const Json& p = j["process"];
  std::snprintf(buf, sizeof buf, "process   rss %s, cpu %.1f s, %.0f threads, up %s\n",
                human_bytes(static_cast<int64_t>(p["resident_memory_bytes"].get<double>())).c_str(),
                p["cpu_seconds"].get<double>(), p["threads"].get<double>(),
                human_duration(static_cast<int64_t>(p["uptime_seconds"].get<double>())).c_str());
  out += buf;
  return out;
}

}  // namespace cpmctl
