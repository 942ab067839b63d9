// SPDX-License-Identifier: Apache-2.0
#include "cli_checks.h"

#include <cstdio>
#include <cstdlib>

namespace cpmctl {
namespace {

// The flag's value as a number, if it is one.
bool number(const std::string& text, double* value) {
  char* end = nullptr;
  *value = std::strtod(text.c_str(), &end);
  return end != text.c_str() && *end == '\0';
}

std::string shortest(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

}  // namespace

const CLI::Validator& positive() {
  static const CLI::Validator check(
      [](std::string& input) -> std::string {
        double v = 0;
        if (number(input, &v) && v > 0) return "";
        return "must be greater than 0, not " + input;
      },
      "> 0");
  return check;
}

const CLI::Validator& non_negative() {
  static const CLI::Validator check(
      [](std::string& input) -> std::string {
        double v = 0;
        if (number(input, &v) && v >= 0) return "";
        return "must be 0 or more, not " + input;
      },
      ">= 0");
  return check;
}

CLI::Validator between(double low, double high) {
  const std::string range = "[" + shortest(low) + ", " + shortest(high) + "]";
  return CLI::Validator(
      [low, high, range](std::string& input) -> std::string {
        double v = 0;
        if (number(input, &v) && v >= low && v <= high) return "";
        return "must be in " + range + ", not " + input;
      },
      "in " + range);
}

}  // namespace cpmctl
