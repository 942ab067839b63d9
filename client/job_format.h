// SPDX-License-Identifier: Apache-2.0
//
// How jobs, their events and datasets read on a terminal.
#pragma once

#include <optional>
#include <string>

#include "cpm/v1/training.pb.h"

namespace cpmctl {

// "queued", "running", ..., from JobState; and back (nullopt for an unknown word).
std::string state_word(cpm::v1::JobState state);
std::optional<cpm::v1::JobState> parse_state_word(const std::string& word);
bool is_terminal(cpm::v1::JobState state);

// The header and one row per job of `cpmctl jobs`.
std::string jobs_table_header();
std::string jobs_table_row(const cpm::v1::Job& job);

// `cpmctl job ID`: state, progress, last evaluation, times, the spec's main hyperparameters.
std::string job_details(const cpm::v1::Job& job);

// One line for an evaluation: "eval at step 500: loss 0.4123  exact match 61.0%  edit distance
// 0.0830  BLEU-4 0.8812  (200 examples, 41s)".
std::string eval_line(const cpm::v1::EvalResult& eval);

// `cpmctl datasets`.
std::string datasets_table_header();
std::string datasets_table_row(const cpm::v1::Dataset& dataset);

}  // namespace cpmctl
