// SPDX-License-Identifier: Apache-2.0
#include "metrics_command.h"

#include <cstdio>

#include "connection.h"
#include "cpm/v1/admin.grpc.pb.h"
#include "http_get.h"
#include "metrics_summary.h"

namespace cpmctl {

std::string metrics_fetch_address(const std::string& metrics_address, const std::string& server) {
  std::string host, port, server_host, server_port;
  if (!split_host_port(metrics_address, &host, &port).ok()) return metrics_address;
  if (host != "0.0.0.0" && host != "::" && !host.empty()) return metrics_address;
  if (!split_host_port(server, &server_host, &server_port).ok()) return metrics_address;
  const bool v6 = server_host.find(':') != std::string::npos;
  return (v6 ? "[" + server_host + "]" : server_host) + ":" + port;
}

CLI::App* add_metrics_command(CLI::App& app, MetricsOptions& o) {
  CLI::App* cmd = app.add_subcommand(
      "metrics", "Summary of cpmd's Prometheus /metrics: requests, latency quantiles, queue, adapters, GPU "
                 "memory, training jobs");
  cmd->add_option("--url", o.url, "fetch this URL (http://HOST:PORT/metrics) instead of asking cpmd where it is");
  cmd->add_flag("--raw", o.raw, "print the Prometheus text as served");
  cmd->footer("Quantiles are estimated from the histogram buckets (as PromQL's histogram_quantile) over the "
              "daemon's lifetime.\nExamples:\n  cpmctl metrics\n  cpmctl metrics --json | jq .ocr_latency_seconds");
  return cmd;
}

int run_metrics(const GlobalOptions& global, const MetricsOptions& options) {
  std::string address, path = "/metrics";
  if (!options.url.empty()) {
    const std::string prefix = "http://";
    if (options.url.rfind(prefix, 0) != 0) {
      std::fprintf(stderr, "cpmctl: --url must start with http:// (cpmd serves /metrics without TLS)\n");
      return kExitUsage;
    }
    const std::string rest = options.url.substr(prefix.size());
    const size_t slash = rest.find('/');
    address = rest.substr(0, slash);
    if (slash != std::string::npos) path = rest.substr(slash);
  } else {
    auto stub = make_stub<cpm::v1::Admin>(global);
    if (!stub) return kExitUsage;
    cpm::v1::ServerInfo info;
    auto context = make_context(global);
    const grpc::Status status = stub->GetInfo(context.get(), cpm::v1::GetInfoRequest(), &info);
    if (!status.ok()) return report_error(status, global.server, "info");
    if (info.status().metrics_address().empty()) {
      std::fprintf(stderr, "cpmctl: cpmd at %s reports no metrics address; pass --url\n", global.server.c_str());
      return kExitServerError;
    }
    address = metrics_fetch_address(info.status().metrics_address(), global.server);
  }
  auto text = http_get(address, path, global.token, global.timeout_seconds);
  if (!text.ok()) {
    std::fprintf(stderr, "cpmctl: cannot fetch the metrics: %s%s\n", std::string(text.status().message()).c_str(),
                 options.url.empty() ? " (if it is reachable under another address, pass --url)" : "");
    return absl::IsUnavailable(text.status()) ? kExitUnreachable : kExitServerError;
  }
  if (options.raw) {
    std::fputs(text->c_str(), stdout);
    return kExitOk;
  }
  auto samples = parse_prometheus_text(*text);
  if (!samples.ok()) {
    std::fprintf(stderr, "cpmctl: http://%s%s: %s\n", address.c_str(), path.c_str(),
                 std::string(samples.status().message()).c_str());
    return kExitServerError;
  }
  const auto summary = summarize_metrics(*samples);
  if (global.json) {
    std::printf("%s\n", summary.dump(2).c_str());
  } else {
    std::fputs(format_metrics_summary(summary).c_str(), stdout);
  }
  return kExitOk;
}

}  // namespace cpmctl
