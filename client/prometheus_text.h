// SPDX-License-Identifier: Apache-2.0
//
// The Prometheus text exposition format (0.0.4), read back: samples with their labels, and
// quantiles estimated from histogram buckets the way PromQL's histogram_quantile() does.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace cpmctl {

using Labels = std::map<std::string, std::string>;

struct Sample {
  std::string name;  // with any _bucket / _sum / _count suffix
  Labels labels;
  double value = 0;
};

// Every sample, in order; comments (# HELP, # TYPE) are skipped. INVALID_ARGUMENT with the line
// number for a line that is not a sample.
absl::StatusOr<std::vector<Sample>> parse_prometheus_text(const std::string& text);

// Sums of one family's series grouped by the values of `by` (empty: one group, key {}).
// Only samples named exactly `name` whose labels include `match` count.
std::map<std::vector<std::string>, double> sum_by(const std::vector<Sample>& samples,
                                                  const std::string& name,
                                                  const std::vector<std::string>& by,
                                                  const Labels& match = {});

// A histogram summed over all its series that include `match`.
struct HistogramData {
  std::vector<std::pair<double, double>> buckets;  // (upper bound, cumulative count), +Inf last
  double sum = 0;
  double count = 0;
};
HistogramData histogram(const std::vector<Sample>& samples, const std::string& name,
                        const Labels& match = {});

// The q-quantile (0..1) by linear interpolation inside the bucket, as histogram_quantile():
// nullopt without observations; the highest finite bound when it falls in the +Inf bucket.
std::optional<double> histogram_quantile(double q, const HistogramData& h);

}  // namespace cpmctl
