// SPDX-License-Identifier: Apache-2.0
#include "formula_render.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "dataset_check.h"
#include "subprocess.h"
#include "test_util.h"

namespace cpmctl {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

TEST(FormulaRender, DocumentWrapsTheFormulaInDisplayMath) {
  const std::string doc = latex_document("\\frac{a}{b}");
  EXPECT_THAT(doc, HasSubstr("\\usepackage{amsmath,amssymb}"));
  EXPECT_THAT(doc, HasSubstr("$\\displaystyle \\frac{a}{b}$"));
}

TEST(FormulaRender, LatexErrorTakesTheFirstErrorAndWhereItStopped) {
  const std::string log =
      "This is pdfTeX\n(./f.tex\n! Undefined control sequence.\n<recently read> \\foo \n"
      "                   \nl.5 $\\displaystyle x + \\foo\n                   y$\n! Emergency stop.\n";
  EXPECT_EQ(latex_error(log), "Undefined control sequence. near \"x + \\foo\"");
  EXPECT_EQ(latex_error("! Missing $ inserted.\n"), "Missing $ inserted.");
  EXPECT_EQ(latex_error("no errors here\n"), "");
}

TEST(FormulaRender, CsvFieldsAreQuotedOnlyWhenTheyMustBe) {
  EXPECT_EQ(csv_field("x^2"), "x^2");
  EXPECT_EQ(csv_field("a, b"), "\"a, b\"");
  EXPECT_EQ(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
  EXPECT_EQ(csv_field(" x"), "\" x\"");
}

TEST(FormulaRender, RendersPngsAndSkipsWhatDoesNotCompile) {
  if (find_in_path("latex").empty() || find_in_path("dvipng").empty()) {
    GTEST_SKIP() << "needs latex and dvipng (texlive-latex-base, dvipng)";
  }
  cpm::testing::TempDir dir;
  RenderOptions o;
  o.formulas_file = dir.write("f.txt", "\\frac{a}{b}, c\n\n\\notacommand x\n\\sum_{i=1}^n i^2\n");
  o.out_dir = dir.file("out");
  o.jobs = 2;
  auto r = render_formulas(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->rendered, 2);
  ASSERT_EQ(r->failures.size(), 1u);
  EXPECT_EQ(r->failures[0].line, 3);
  EXPECT_THAT(r->failures[0].reason, HasSubstr("Undefined control sequence"));
  std::ifstream in(r->labels_csv);
  const std::string csv((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(csv, "image_path,text\n000001.png,\"\\frac{a}{b}, c\"\n000004.png,\\sum_{i=1}^n i^2\n");
  EXPECT_TRUE(check_image_file(dir.file("out/000001.png")).ok());
  EXPECT_FALSE(fs::exists(dir.path() / "out/000003.png"));
  // No work folders are left behind.
  for (const auto& entry : fs::directory_iterator(dir.path() / "out")) {
    EXPECT_THAT(entry.path().filename().string(), ::testing::Not(HasSubstr(".render-")));
  }
  // And the labels are a dataset the daemon's rules accept.
  auto checked = check_dataset(r->labels_csv);
  ASSERT_TRUE(checked.ok());
  EXPECT_TRUE(checked->bad.empty()) << checked->describe();
}

TEST(Subprocess, TimeoutKillsAndExitCodesArrive) {
  cpm::testing::TempDir dir;
  const std::string out = dir.file("out.txt");
  auto r = run_process({"sh", "-c", "echo hi; exit 3"}, dir.path().string(), out, 10);
  EXPECT_TRUE(r.started);
  EXPECT_EQ(r.exit_code, 3);
  r = run_process({"sleep", "10"}, dir.path().string(), out, 0.2);
  EXPECT_TRUE(r.timed_out);
  r = run_process({"no-such-program-cpmctl"}, dir.path().string(), out, 1);
  EXPECT_FALSE(r.started);
  EXPECT_THAT(r.error, HasSubstr("no-such-program-cpmctl"));
}

}  // namespace
}  // namespace cpmctl
