// SPDX-License-Identifier: Apache-2.0
//
// Number checks for flags whose failures read as sentences ("--lora-r: must be at least 1, not 0")
// rather than CLI11's "Value 0 not in range 0.000000 to 1.797e+308".
#pragma once

#include <CLI/CLI.hpp>

namespace cpmctl {

// A number > 0.
const CLI::Validator& positive();
// A number >= 0.
const CLI::Validator& non_negative();
// A number in [low, high].
CLI::Validator between(double low, double high);

}  // namespace cpmctl
