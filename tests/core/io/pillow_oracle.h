// SPDX-License-Identifier: Apache-2.0
//
// The reference for the image tests: Debian's Python with python3-pil (Pillow 9.4), running a
// generator script from tests/core/io that writes inputs and Pillow's outputs into a directory.
// /usr/bin/python3 on purpose: the first python3 on PATH may be another interpreter without PIL.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace cpm::testing {

inline constexpr const char* kPillowPython = "/usr/bin/python3";

// Runs tests/core/io/<script> with `args` (already shell-quoted where needed). Returns an empty
// string on success, else what went wrong (the script's stderr is left on the test's stderr).
inline std::string run_pillow_script(const std::string& script, const std::string& args) {
  const std::string path = std::string(CPM_TEST_SOURCE_DIR) + "/tests/core/io/" + script;
  const std::string command = std::string(kPillowPython) + " '" + path + "' " + args;
  const int rc = std::system(command.c_str());
  if (rc == 0) return "";
  return "`" + command + "` failed (status " + std::to_string(rc) +
         "); the image tests need Debian's python3-pil (deploy/install-deps.sh installs it)";
}

inline std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

}  // namespace cpm::testing
