// SPDX-License-Identifier: Apache-2.0
//
// `cpmctl dataset render`: LaTeX formulas (one per line) -> PNG images through TeX Live's `latex`
// and `dvipng` (Debian: texlive-latex-base, dvipng), plus an `image_path,text` labels CSV beside
// them, the recipe's CSV format, which `cpmctl dataset prepare` and `cpmctl train` read.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace cpmctl {

struct RenderOptions {
  std::string formulas_file;  // one formula per line; blank lines are skipped
  std::string out_dir;        // gets NNNNNN.png (the formula's line number) and labels.csv
  int dpi = 200;
  int jobs = 1;                 // formulas rendered at once
  double timeout_seconds = 30;  // per formula and program
};

struct RenderFailure {
  int64_t line = 0;
  std::string reason;  // LaTeX's own error ("Undefined control sequence near ...")
};

struct RenderResult {
  std::string labels_csv;
  int64_t rendered = 0;
  std::vector<RenderFailure> failures;  // in line order
};

// The LaTeX document for one formula: amsmath and amssymb, display style, no page number.
std::string latex_document(const std::string& formula);

// LaTeX's first error in a log ("! ..." and the source line it stopped at), or "" when none.
std::string latex_error(const std::string& log);

// A field of the labels CSV, quoted when it must be (RFC 4180).
std::string csv_field(const std::string& text);

// Renders every formula. A formula that does not compile is a RenderFailure, not an error.
// FAILED_PRECONDITION when latex or dvipng is not installed; NOT_FOUND / UNAVAILABLE for files.
absl::StatusOr<RenderResult> render_formulas(const RenderOptions& options);

}  // namespace cpmctl
