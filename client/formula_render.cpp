// SPDX-License-Identifier: Apache-2.0
#include "formula_render.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_cat.h"
#include "common/read_file.h"
#include "subprocess.h"

namespace cpmctl {
namespace {

namespace fs = std::filesystem;

struct Formula {
  int64_t line = 0;
  std::string text;
};

std::string image_name(int64_t line) {
  char name[32];
  std::snprintf(name, sizeof name, "%06lld.png", static_cast<long long>(line));
  return name;
}

// Compiles one formula in its own folder under `work` and moves the PNG into `out`. Returns the
// reason on failure.
std::string render_one(const Formula& f, const fs::path& work, const fs::path& out,
                       const RenderOptions& options) {
  const fs::path dir = work / std::to_string(f.line);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return "cannot create " + dir.string() + ": " + ec.message();
  {
    std::ofstream tex(dir / "f.tex", std::ios::binary);
    tex << latex_document(f.text);
    if (!tex.flush()) return "cannot write " + (dir / "f.tex").string();
  }
  const std::string console = (dir / "console.txt").string();
  ProcessResult latex = run_process({"latex", "-interaction=nonstopmode", "-halt-on-error",
                                     "-no-shell-escape", "f.tex"},
                                    dir.string(), console, options.timeout_seconds);
  if (!latex.started) return latex.error;
  if (latex.timed_out) return absl::StrCat("latex took longer than ", options.timeout_seconds, " s");
  if (latex.exit_code != 0) {
    auto log = cpm::core::read_whole_file((dir / "f.log").string());
    const std::string error = log.ok() ? latex_error(*log) : "";
    return error.empty() ? absl::StrCat("latex exited with ", latex.exit_code) : error;
  }
  ProcessResult png = run_process({"dvipng", "-q", "-D", std::to_string(options.dpi), "-T", "tight",
                                   "-bg", "White", "-o", "f.png", "f.dvi"},
                                  dir.string(), console, options.timeout_seconds);
  if (!png.started) return png.error;
  if (png.timed_out || png.exit_code != 0 || !fs::exists(dir / "f.png")) {
    auto text = cpm::core::read_whole_file(console);
    return "dvipng failed: " + std::string(absl::StripAsciiWhitespace(text.ok() ? *text : ""));
  }
  fs::rename(dir / "f.png", out / image_name(f.line), ec);
  if (ec) fs::copy_file(dir / "f.png", out / image_name(f.line), fs::copy_options::overwrite_existing, ec);
  if (ec) return "cannot write " + (out / image_name(f.line)).string() + ": " + ec.message();
  return "";
}

}  // namespace

std::string latex_document(const std::string& formula) {
  return "\\documentclass[12pt]{article}\n"
         "\\usepackage{amsmath,amssymb}\n"
         "\\pagestyle{empty}\n"
         "\\begin{document}\n"
         "$\\displaystyle " + formula + "$\n"
         "\\end{document}\n";
}

std::string latex_error(const std::string& log) {
  size_t bang = log.compare(0, 2, "! ") == 0 ? 0 : log.find("\n! ");
  if (bang == std::string::npos) return "";
  if (log[bang] == '\n') ++bang;
  const size_t end = log.find('\n', bang);
  std::string error = log.substr(bang + 2, end == std::string::npos ? std::string::npos : end - bang - 2);
  // TeX shows where it stopped as "l.<n> <the source read so far>".
  if (const size_t at = log.find("\nl.", bang); at != std::string::npos) {
    const size_t stop = log.find('\n', at + 1);
    std::string context = log.substr(at + 1, stop == std::string::npos ? std::string::npos : stop - at - 1);
    context = context.substr(std::min(context.find(' '), context.size()));
    absl::StripAsciiWhitespace(&context);
    // The document's own wrapping (latex_document) is not the user's.
    absl::string_view shown = context;
    absl::ConsumePrefix(&shown, "$\\displaystyle ");
    if (!shown.empty()) absl::StrAppend(&error, " near \"", shown, "\"");
  }
  return error;
}

std::string csv_field(const std::string& text) {
  if (text.find_first_of(",\"\r\n") == std::string::npos && absl::StripAsciiWhitespace(text) == text) {
    return text;
  }
  std::string quoted = "\"";
  for (const char c : text) {
    if (c == '"') quoted += '"';
    quoted += c;
  }
  return quoted + "\"";
}

absl::StatusOr<RenderResult> render_formulas(const RenderOptions& options) {
  for (const char* program : {"latex", "dvipng"}) {
    if (find_in_path(program).empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "`", program, "` is not installed; dataset render needs TeX Live's latex and dvipng "
          "(Debian: apt-get install texlive-latex-base dvipng)"));
    }
  }
  auto text = cpm::core::read_whole_file(options.formulas_file);
  if (!text.ok()) return text.status();
  std::vector<Formula> formulas;
  int64_t line = 0;
  for (size_t begin = 0; begin < text->size();) {
    size_t end = text->find('\n', begin);
    if (end == std::string::npos) end = text->size();
    std::string formula = text->substr(begin, end - begin);
    begin = end + 1;
    ++line;
    absl::StripAsciiWhitespace(&formula);
    if (!formula.empty()) formulas.push_back({line, std::move(formula)});
  }
  if (formulas.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(options.formulas_file, " holds no formula"));
  }

  std::error_code ec;
  const fs::path out = fs::absolute(options.out_dir);
  fs::create_directories(out, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot create ", out.string(), ": ", ec.message()));
  std::string pattern = (out / ".render-XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) {
    return absl::UnavailableError(absl::StrCat("cannot create a work folder in ", out.string()));
  }
  const fs::path work = pattern;

  std::vector<std::string> reasons(formulas.size());
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t i; (i = next++) < formulas.size();) reasons[i] = render_one(formulas[i], work, out, options);
  };
  std::vector<std::thread> threads;
  const size_t n = std::clamp<size_t>(static_cast<size_t>(std::max(options.jobs, 1)), 1, formulas.size());
  for (size_t t = 0; t < n; ++t) threads.emplace_back(worker);
  for (auto& t : threads) t.join();
  fs::remove_all(work, ec);

  RenderResult result;
  std::string csv = "image_path,text\n";
  for (size_t i = 0; i < formulas.size(); ++i) {
    if (!reasons[i].empty()) {
      result.failures.push_back({formulas[i].line, reasons[i]});
      continue;
    }
    absl::StrAppend(&csv, image_name(formulas[i].line), ",", csv_field(formulas[i].text), "\n");
    ++result.rendered;
  }
  result.labels_csv = (out / "labels.csv").string();
  std::ofstream labels(result.labels_csv, std::ios::binary | std::ios::trunc);
  labels << csv;
  if (!labels.flush()) return absl::UnavailableError(absl::StrCat("cannot write ", result.labels_csv));
  return result;
}

}  // namespace cpmctl
