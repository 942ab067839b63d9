// SPDX-License-Identifier: Apache-2.0
#include "prometheus_text.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace cpmctl {
namespace {

bool matches(const Labels& labels, const Labels& match) {
  for (const auto& [k, v] : match) {
    const auto it = labels.find(k);
    if (it == labels.end() || it->second != v) return false;
  }
  return true;
}

double parse_value(const std::string& text, bool* ok) {
  if (text == "+Inf" || text == "Inf") return INFINITY;
  if (text == "-Inf") return -INFINITY;
  if (text == "NaN") return NAN;
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  *ok = end != text.c_str() && *end == '\0';
  return v;
}

// `{a="x",b="y\"z"}` starting at text[pos] == '{'; moves pos past the '}'.
bool parse_labels(const std::string& text, size_t& pos, Labels* labels) {
  ++pos;
  while (pos < text.size() && text[pos] != '}') {
    const size_t eq = text.find('=', pos);
    if (eq == std::string::npos || eq + 1 >= text.size() || text[eq + 1] != '"') return false;
    const std::string key = text.substr(pos, eq - pos);
    std::string value;
    size_t i = eq + 2;
    for (; i < text.size() && text[i] != '"'; ++i) {
      if (text[i] == '\\' && i + 1 < text.size()) {
        ++i;
        value += text[i] == 'n' ? '\n' : text[i];
      } else {
        value += text[i];
      }
    }
    if (i >= text.size()) return false;
    (*labels)[key] = value;
    pos = i + 1;
    if (pos < text.size() && text[pos] == ',') ++pos;
  }
  if (pos >= text.size()) return false;
  ++pos;
  return true;
}

}  // namespace

absl::StatusOr<std::vector<Sample>> parse_prometheus_text(const std::string& text) {
  std::vector<Sample> samples;
  int64_t line_number = 0;
  for (size_t begin = 0; begin < text.size();) {
    size_t end = text.find('\n', begin);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(begin, end - begin);
    begin = end + 1;
    ++line_number;
    if (line.empty() || line[0] == '#') continue;
    Sample s;
    size_t pos = line.find_first_of("{ ");
    if (pos == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("metrics line ", line_number, ": no value"));
    }
    s.name = line.substr(0, pos);
    if (line[pos] == '{' && !parse_labels(line, pos, &s.labels)) {
      return absl::InvalidArgumentError(absl::StrCat("metrics line ", line_number, ": bad labels"));
    }
    while (pos < line.size() && line[pos] == ' ') ++pos;
    const std::string value = line.substr(pos, line.find(' ', pos) - pos);  // a timestamp may follow
    bool ok = true;
    s.value = parse_value(value, &ok);
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat("metrics line ", line_number, ": bad value '", value, "'"));
    }
    samples.push_back(std::move(s));
  }
  return samples;
}

std::map<std::vector<std::string>, double> sum_by(const std::vector<Sample>& samples,
                                                  const std::string& name,
                                                  const std::vector<std::string>& by,
                                                  const Labels& match) {
  std::map<std::vector<std::string>, double> out;
  for (const Sample& s : samples) {
    if (s.name != name || !matches(s.labels, match)) continue;
    std::vector<std::string> key;
    for (const auto& label : by) {
      const auto it = s.labels.find(label);
      key.push_back(it == s.labels.end() ? "" : it->second);
    }
    out[key] += s.value;
  }
  return out;
}

HistogramData histogram(const std::vector<Sample>& samples, const std::string& name,
                        const Labels& match) {
  HistogramData h;
  std::map<double, double> buckets;
  for (const Sample& s : samples) {
    if (!matches(s.labels, match)) continue;
    if (s.name == name + "_bucket") {
      const auto le = s.labels.find("le");
      if (le == s.labels.end()) continue;
      bool ok = true;
      const double bound = parse_value(le->second, &ok);
      if (ok) buckets[bound] += s.value;
    } else if (s.name == name + "_sum") {
      h.sum += s.value;
    } else if (s.name == name + "_count") {
      h.count += s.value;
    }
  }
  h.buckets.assign(buckets.begin(), buckets.end());
  return h;
}

std::optional<double> histogram_quantile(double q, const HistogramData& h) {
  if (h.buckets.empty() || h.buckets.back().second <= 0) return std::nullopt;
  const double total = h.buckets.back().second;
  const double rank = q * total;
  for (size_t i = 0; i < h.buckets.size(); ++i) {
    const auto [bound, cumulative] = h.buckets[i];
    if (cumulative < rank) continue;
    if (std::isinf(bound)) return i > 0 ? h.buckets[i - 1].first : 0.0;
    const double lower = i > 0 ? h.buckets[i - 1].first : 0.0;
    const double below = i > 0 ? h.buckets[i - 1].second : 0.0;
    const double in_bucket = cumulative - below;
    if (in_bucket <= 0) return bound;
    return lower + (bound - lower) * (rank - below) / in_bucket;
  }
  return h.buckets.back().first;
}

}  // namespace cpmctl
