// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <zlib.h>

#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

namespace cpm::testing {

// Every line of a gzipped JSON Lines file (golden data), parsed.
inline std::vector<nlohmann::json> read_jsonl_gz(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr) throw std::runtime_error("cannot open " + path);
  std::vector<nlohmann::json> out;
  std::string line;
  char buf[1 << 16];
  while (gzgets(f, buf, sizeof buf) != nullptr) {
    line += buf;
    if (!line.empty() && line.back() == '\n') {
      out.push_back(nlohmann::json::parse(line));
      line.clear();
    }
  }
  if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  gzclose(f);
  return out;
}

}  // namespace cpm::testing
