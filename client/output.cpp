// SPDX-License-Identifier: Apache-2.0
#include "output.h"

#include <google/protobuf/util/json_util.h>

#include <cstdio>

namespace cpmctl {

namespace {

std::string json_text(const google::protobuf::Message& message, bool indented) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = indented;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string out;
  if (!google::protobuf::util::MessageToJsonString(message, &out, options).ok()) return "{}";
  return out;
}

}  // namespace

std::string to_json(const google::protobuf::Message& message) {
  std::string out = json_text(message, true);
  if (out.empty() || out.back() != '\n') out += '\n';
  return out;
}

std::string to_json_line(const google::protobuf::Message& message) { return json_text(message, false); }

std::string human_bytes(int64_t bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int unit = 0;
  while (v >= 1024 && unit < 4) {
    v /= 1024;
    ++unit;
  }
  char buf[32];
  if (unit == 0) {
    std::snprintf(buf, sizeof buf, "%lld B", static_cast<long long>(bytes));
  } else {
    std::snprintf(buf, sizeof buf, "%.1f %s", v, kUnits[unit]);
  }
  return buf;
}

std::string human_duration(int64_t s) {
  char buf[32];
  if (s >= 86400) {
    std::snprintf(buf, sizeof buf, "%lldd %lldh", static_cast<long long>(s / 86400),
                  static_cast<long long>(s % 86400 / 3600));
  } else if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%lldh %lldm", static_cast<long long>(s / 3600),
                  static_cast<long long>(s % 3600 / 60));
  } else if (s >= 60) {
    std::snprintf(buf, sizeof buf, "%lldm %llds", static_cast<long long>(s / 60),
                  static_cast<long long>(s % 60));
  } else {
    std::snprintf(buf, sizeof buf, "%llds", static_cast<long long>(s));
  }
  return buf;
}

namespace {

std::string model_line(const cpm::v1::ModelInfo& m) {
  switch (m.state()) {
    case cpm::v1::MODEL_STATE_NONE:
      return "none (start cpmd with --model DIR)";
    case cpm::v1::MODEL_STATE_LOADING:
      return m.path() + " (loading)";
    case cpm::v1::MODEL_STATE_READY: {
      const auto& l = m.llm();
      char buf[256];
      std::snprintf(buf, sizeof buf,
                    " (%s, %d layers, hidden %d, %d/%d heads, vocab %d; vision %d layers; %s on %s)",
                    m.architecture().c_str(), l.num_hidden_layers(), l.hidden_size(),
                    l.num_attention_heads(), l.num_key_value_heads(), l.vocab_size(),
                    m.vision().num_hidden_layers(), m.dtype().c_str(), m.device().c_str());
      return m.path() + buf;
    }
    case cpm::v1::MODEL_STATE_FAILED: {
      std::string line = m.path() + " (not loaded: " + m.error() + ")";
      if (m.llm().hidden_size() > 0) {
        char buf[256];
        std::snprintf(buf, sizeof buf,
                      "\n          %s: LLM %d layers, hidden %d, heads %d/%d, vocab %d; vision %d "
                      "layers, hidden %d; %d queries per slice, up to %d slices",
                      m.architecture().c_str(), m.llm().num_hidden_layers(), m.llm().hidden_size(),
                      m.llm().num_attention_heads(), m.llm().num_key_value_heads(),
                      m.llm().vocab_size(), m.vision().num_hidden_layers(),
                      m.vision().hidden_size(), m.resampler().query_num(),
                      m.slicing().max_slice_nums());
        line += buf;
      }
      return line;
    }
    default:
      return "unknown";
  }
}

}  // namespace

std::string format_info(const cpm::v1::ServerInfo& info) {
  const auto& b = info.build();
  const auto& s = info.status();
  std::string out;
  out += "cpmd      " + b.version() + " (" + b.git_commit() + "), LibTorch " + b.torch_version() +
         (b.cuda() ? " CUDA" : " CPU-only") + ", gRPC " + b.grpc_version() + ", images " +
         b.image_decoder() + "\n";
  out += "server    grpc " + s.grpc_address() + ", metrics http://" + s.metrics_address() +
         "/metrics, data " + s.data_dir() + ", up " + human_duration(s.uptime().seconds()) +
         ", rss " + human_bytes(s.resident_memory_bytes()) + "\n";
  out += "model     " + model_line(info.model()) + "\n";
  out += "devices\n";
  for (const auto& d : info.devices()) {
    char buf[512];
    if (d.type() == "cuda") {
      std::snprintf(buf, sizeof buf,
                    "  cuda:%d  %s, compute %s, %d SMs, %s total, %s free, %s allocated, %s "
                    "reserved\n",
                    d.index(), d.name().c_str(), d.compute_capability().c_str(), d.cores(),
                    human_bytes(d.memory_total_bytes()).c_str(),
                    human_bytes(d.memory_free_bytes()).c_str(),
                    human_bytes(d.memory_allocated_bytes()).c_str(),
                    human_bytes(d.memory_reserved_bytes()).c_str());
    } else {
      std::snprintf(buf, sizeof buf, "  cpu     %s, %d cores, %s total, %s available\n",
                    d.name().c_str(), d.cores(), human_bytes(d.memory_total_bytes()).c_str(),
                    human_bytes(d.memory_free_bytes()).c_str());
    }
    out += buf;
  }
  if (s.unimplemented_services_size() > 0) {
    out += "not yet   ";
    for (int i = 0; i < s.unimplemented_services_size(); ++i) {
      out += (i ? ", " : "") + s.unimplemented_services(i);
    }
    out += " (answer UNIMPLEMENTED)\n";
  }
  return out;
}

}  // namespace cpmctl
