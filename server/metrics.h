// SPDX-License-Identifier: Apache-2.0
//
// A small Prometheus client: counters, gauges and histograms with labels, rendered in the text
// exposition format (version 0.0.4). prometheus-cpp is not packaged for our targets, and this is
// all the daemon needs. Naming follows Prometheus practice: base units, `_total` on counters.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"

namespace cpm::server {

class Counter {
 public:
  void inc(double v = 1.0);
  // For counters mirrored from a cumulative source (process CPU time); v must not decrease.
  void set(double v) { value_.store(v); }
  double value() const { return value_.load(); }

 private:
  std::atomic<double> value_{0.0};
};

class Gauge {
 public:
  void set(double v) { value_.store(v); }
  void inc(double v = 1.0);
  void dec(double v = 1.0) { inc(-v); }
  double value() const { return value_.load(); }

 private:
  std::atomic<double> value_{0.0};
};

class Histogram {
 public:
  // `bounds` are the upper bounds of the finite buckets, strictly increasing.
  explicit Histogram(std::vector<double> bounds);
  void observe(double v);

  struct Snapshot {
    std::vector<uint64_t> cumulative;  // one per bound, then +Inf
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot snapshot() const;
  const std::vector<double>& bounds() const { return bounds_; }

 private:
  const std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::vector<uint64_t> counts_ ABSL_GUARDED_BY(mu_);  // per bucket, not cumulative; last is +Inf
  double sum_ ABSL_GUARDED_BY(mu_) = 0;
};

// All series of one metric name, keyed by label values. Series are created on first use and live
// as long as the registry unless removed; references to them stay valid until then. Thread-safe.
template <typename Metric>
class Family {
 public:
  Family(std::string name, std::string help, std::vector<std::string> label_names,
         std::function<std::unique_ptr<Metric>()> make)
      : name_(std::move(name)),
        help_(std::move(help)),
        label_names_(std::move(label_names)),
        make_(std::move(make)) {}

  // `label_values` must have one value per label name.
  Metric& with(const std::vector<std::string>& label_values);
  // Drops that series (it leaves /metrics); nothing if there is none.
  void remove(const std::vector<std::string>& label_values);

  const std::string& name() const { return name_; }
  const std::string& help() const { return help_; }
  const std::vector<std::string>& label_names() const { return label_names_; }
  // Calls fn(label_values, metric) for each series, in label order.
  void for_each(
      const std::function<void(const std::vector<std::string>&, const Metric&)>& fn) const;

 private:
  const std::string name_;
  const std::string help_;
  const std::vector<std::string> label_names_;
  const std::function<std::unique_ptr<Metric>()> make_;
  mutable std::mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<Metric>> series_ ABSL_GUARDED_BY(mu_);
};

// Owns the metric families of one daemon; passed to whoever records (no global singleton).
// Families are registered at start-up; rendering and recording are thread-safe.
class Registry {
 public:
  Family<Counter>& counter(const std::string& name, const std::string& help,
                           std::vector<std::string> labels = {});
  Family<Gauge>& gauge(const std::string& name, const std::string& help,
                       std::vector<std::string> labels = {});
  Family<Histogram>& histogram(const std::string& name, const std::string& help,
                               std::vector<std::string> labels, std::vector<double> bounds);

  // Runs before each render, to refresh values read from elsewhere (/proc, the engine).
  void on_collect(std::function<void()> hook);

  // The whole exposition, families in registration order.
  std::string render();

 private:
  std::mutex mu_;
  std::vector<std::unique_ptr<Family<Counter>>> counters_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Family<Gauge>>> gauges_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Family<Histogram>>> histograms_ ABSL_GUARDED_BY(mu_);
  // Registration order across the three kinds: (kind, index).
  std::vector<std::pair<int, size_t>> order_ ABSL_GUARDED_BY(mu_);
  std::vector<std::function<void()>> hooks_ ABSL_GUARDED_BY(mu_);
};

// Prometheus' default latency buckets, 5 ms to 10 s (seconds).
std::vector<double> default_latency_buckets();

// Escapes a label value for the text format (backslash, double quote, newline).
std::string escape_label_value(const std::string& value);

}  // namespace cpm::server
