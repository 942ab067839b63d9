// SPDX-License-Identifier: Apache-2.0
#include "metrics.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <stdexcept>

namespace cpm::server {
namespace {

void atomic_add(std::atomic<double>& a, double v) {
  double cur = a.load();
  while (!a.compare_exchange_weak(cur, cur + v)) {
  }
}

std::string format_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  // Shortest text that reads back as the same double.
  char buf[64];
  const auto result = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, result.ptr);
}

std::string label_set(const std::vector<std::string>& names, const std::vector<std::string>& values,
                      const std::string& extra_name = "", const std::string& extra_value = "") {
  if (names.empty() && extra_name.empty()) return "";
  std::string out = "{";
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out += ',';
    out += names[i] + "=\"" + escape_label_value(values[i]) + "\"";
  }
  if (!extra_name.empty()) {
    if (!names.empty()) out += ',';
    out += extra_name + "=\"" + extra_value + "\"";
  }
  return out + "}";
}

void header(std::string& out, const std::string& name, const std::string& help, const char* type) {
  out += "# HELP " + name + " ";
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  out += "\n# TYPE " + name + " " + type + "\n";
}

template <typename Metric>
void render_simple(std::string& out, const Family<Metric>& f, const char* type) {
  header(out, f.name(), f.help(), type);
  f.for_each([&](const std::vector<std::string>& labels, const Metric& m) {
    out += f.name() + label_set(f.label_names(), labels) + " " + format_value(m.value()) + "\n";
  });
}

void render_histogram(std::string& out, const Family<Histogram>& f) {
  header(out, f.name(), f.help(), "histogram");
  f.for_each([&](const std::vector<std::string>& labels, const Histogram& h) {
    const Histogram::Snapshot s = h.snapshot();
    for (size_t i = 0; i <= h.bounds().size(); ++i) {
      const std::string le = i < h.bounds().size() ? format_value(h.bounds()[i]) : "+Inf";
      out += f.name() + "_bucket" + label_set(f.label_names(), labels, "le", le) + " " +
             format_value(static_cast<double>(s.cumulative[i])) + "\n";
    }
    out += f.name() + "_sum" + label_set(f.label_names(), labels) + " " + format_value(s.sum) + "\n";
    out += f.name() + "_count" + label_set(f.label_names(), labels) + " " +
           format_value(static_cast<double>(s.count)) + "\n";
  });
}

}  // namespace

void Counter::inc(double v) {
  if (v < 0) throw std::invalid_argument("a counter cannot decrease");
  atomic_add(value_, v);
}

void Gauge::inc(double v) { atomic_add(value_, v); }

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)) {
  for (size_t i = 1; i < bounds_.size(); ++i) {
    if (!(bounds_[i] > bounds_[i - 1])) {
      throw std::invalid_argument("histogram bounds must increase strictly");
    }
  }
  counts_.assign(bounds_.size() + 1, 0);
}

void Histogram::observe(double v) {
  size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  std::lock_guard<std::mutex> lock(mu_);
  ++counts_[i];
  sum_ += v;
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot s;
  std::lock_guard<std::mutex> lock(mu_);
  s.cumulative.resize(counts_.size());
  uint64_t running = 0;
  for (size_t i = 0; i < counts_.size(); ++i) {
    running += counts_[i];
    s.cumulative[i] = running;
  }
  s.count = running;
  s.sum = sum_;
  return s;
}

template <typename Metric>
Metric& Family<Metric>::with(const std::vector<std::string>& label_values) {
  if (label_values.size() != label_names_.size()) {
    throw std::invalid_argument("metric " + name_ + ": wrong number of label values");
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto& slot = series_[label_values];
  if (!slot) slot = make_();
  return *slot;
}

template <typename Metric>
void Family<Metric>::remove(const std::vector<std::string>& label_values) {
  std::lock_guard<std::mutex> lock(mu_);
  series_.erase(label_values);
}

template <typename Metric>
void Family<Metric>::for_each(
    const std::function<void(const std::vector<std::string>&, const Metric&)>& fn) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [labels, metric] : series_) fn(labels, *metric);
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

Family<Counter>& Registry::counter(const std::string& name, const std::string& help,
                                   std::vector<std::string> labels) {
  std::lock_guard<std::mutex> lock(mu_);
  counters_.push_back(std::make_unique<Family<Counter>>(
      name, help, std::move(labels), [] { return std::make_unique<Counter>(); }));
  order_.emplace_back(0, counters_.size() - 1);
  return *counters_.back();
}

Family<Gauge>& Registry::gauge(const std::string& name, const std::string& help,
                               std::vector<std::string> labels) {
  std::lock_guard<std::mutex> lock(mu_);
  gauges_.push_back(std::make_unique<Family<Gauge>>(name, help, std::move(labels),
                                                    [] { return std::make_unique<Gauge>(); }));
  order_.emplace_back(1, gauges_.size() - 1);
  return *gauges_.back();
}

Family<Histogram>& Registry::histogram(const std::string& name, const std::string& help,
                                       std::vector<std::string> labels,
                                       std::vector<double> bounds) {
  Histogram probe(bounds);  // validates the bounds once, up front
  std::lock_guard<std::mutex> lock(mu_);
  histograms_.push_back(std::make_unique<Family<Histogram>>(
      name, help, std::move(labels), [bounds] { return std::make_unique<Histogram>(bounds); }));
  order_.emplace_back(2, histograms_.size() - 1);
  return *histograms_.back();
}

void Registry::on_collect(std::function<void()> hook) {
  std::lock_guard<std::mutex> lock(mu_);
  hooks_.push_back(std::move(hook));
}

std::string Registry::render() {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& hook : hooks_) hook();
  std::string out;
  out.reserve(8192);
  for (const auto& [kind, index] : order_) {
    if (kind == 0) {
      render_simple(out, *counters_[index], "counter");
    } else if (kind == 1) {
      render_simple(out, *gauges_[index], "gauge");
    } else {
      render_histogram(out, *histograms_[index]);
    }
  }
  return out;
}

std::vector<double> default_latency_buckets() {
  return {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0};
}

std::string escape_label_value(const std::string& value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace cpm::server
