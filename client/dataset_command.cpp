// SPDX-License-Identifier: Apache-2.0
#include "dataset_command.h"

#include <cstdio>
#include <thread>

#include <nlohmann/json.hpp>

#include "cli_checks.h"
#include "connection.h"
#include "dataset_check.h"

namespace cpmctl {
namespace {

// Usage problems (files, flags) exit 2; problems in the data exit 1.
int fail(const absl::Status& status) {
  std::fprintf(stderr, "cpmctl: %s\n", std::string(status.message()).c_str());
  return absl::IsInvalidArgument(status) ? kExitServerError : kExitUsage;
}

int run_prepare(const PrepareOptions& options, bool json) {
  auto result = prepare_dataset(options);
  if (!result.ok()) return fail(result.status());
  for (const auto& s : result->skipped) std::fprintf(stderr, "cpmctl: skipped %s\n", s.c_str());
  if (json) {
    nlohmann::json j = {{"train", result->train_json},
                        {"eval", result->eval_json},
                        {"train_records", result->train_records},
                        {"eval_records", result->eval_records},
                        {"copied_images", result->copied_images},
                        {"skipped", result->skipped}};
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("wrote %s (%lld records) and %s (%lld records)%s\n", result->train_json.c_str(),
                static_cast<long long>(result->train_records), result->eval_json.c_str(),
                static_cast<long long>(result->eval_records),
                result->copied_images ? (", copied " + std::to_string(result->copied_images) + " images").c_str()
                                      : "");
  }
  return kExitOk;
}

int run_check(const std::string& file, bool json) {
  auto checked = check_dataset(file);
  if (!checked.ok()) return fail(checked.status());
  if (json) {
    nlohmann::json problems = nlohmann::json::array();
    for (const auto& b : checked->bad) {
      problems.push_back({{"record", checked->where(b.number)}, {"number", b.number}, {"reason", b.reason}});
    }
    nlohmann::json j = {{"file", file},
                        {"records", checked->num_records},
                        {"good", checked->file.records.size()},
                        {"problems", problems}};
    std::printf("%s\n", j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else if (checked->bad.empty()) {
    std::printf("%s: %lld records, no problems found\n", file.c_str(),
                static_cast<long long>(checked->num_records));
  } else {
    std::printf("%s\n", checked->describe().c_str());
  }
  return checked->bad.empty() ? kExitOk : kExitServerError;
}

int run_render(const RenderOptions& options, bool json) {
  auto result = render_formulas(options);
  if (!result.ok()) return fail(result.status());
  for (const auto& f : result->failures) {
    std::fprintf(stderr, "cpmctl: %s:%lld: skipped: %s\n", options.formulas_file.c_str(),
                 static_cast<long long>(f.line), f.reason.c_str());
  }
  if (json) {
    nlohmann::json failures = nlohmann::json::array();
    for (const auto& f : result->failures) failures.push_back({{"line", f.line}, {"reason", f.reason}});
    nlohmann::json j = {{"labels", result->labels_csv}, {"rendered", result->rendered}, {"failed", failures}};
    std::printf("%s\n", j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else {
    std::printf("rendered %lld of %zu formulas into %s\n", static_cast<long long>(result->rendered),
                static_cast<size_t>(result->rendered) + result->failures.size(), result->labels_csv.c_str());
  }
  return result->rendered > 0 ? kExitOk : kExitServerError;
}

}  // namespace

DatasetCommands add_dataset_commands(CLI::App& app, DatasetOptions& o) {
  CLI::App* dataset = app.add_subcommand("dataset", "Prepare, check and render fine-tuning datasets (local; no daemon)");
  dataset->require_subcommand(1);
  dataset->footer("Example: cpmctl dataset check data/train.json");
  DatasetCommands c;

  c.prepare = dataset->add_subcommand(
      "prepare", "Turn an image_path,text CSV into the recipe's conversation JSON: DIR/train.json and "
                 "DIR/eval.json, split by the daemon's seeded split; image paths relative to DIR");
  c.prepare->add_option("labels", o.prepare.labels_csv, "the CSV (header image_path,text; paths relative to it)")
      ->required();
  c.prepare->add_option("--out", o.prepare.out_dir, "output folder; it must hold the images, or use --copy-images")
      ->required();
  c.prepare->add_option("--eval-size", o.prepare.eval_size, "records held out for eval.json (default: 5%, at most 500)")
      ->check(non_negative());
  c.prepare->add_option("--eval-fraction", o.prepare.eval_fraction, "fraction held out instead of --eval-size")
      ->check(between(0.0, 1.0))
      ->excludes("--eval-size");
  c.prepare->add_option("--seed", o.prepare.seed, "seed of the split (default 42, the daemon's split_seed)");
  c.prepare->add_option("--prompt", o.prepare.prompt, "the user question (default: the LaTeX-OCR recipe's)");
  c.prepare->add_flag("--copy-images", o.prepare.copy_images, "copy images that lie outside --out into it");
  c.prepare->add_flag("--skip-bad-records", o.prepare.skip_bad_records,
                      "leave bad records out (listed on stderr) instead of failing");
  c.prepare->footer("Exit 1 lists the bad records (line numbers) and writes nothing.\n"
                    "Example: cpmctl dataset prepare data/labels.csv --out data --eval-size 50");

  c.check = dataset->add_subcommand(
      "check", "Check a dataset (.json, .jsonl or .csv) as the daemon reads it: JSON, roles, answers, image "
               "tags, and that every image exists and is a PNG/JPEG/WebP/BMP/TIFF file");
  c.check->add_option("file", o.check_file, "the dataset file")->required();
  c.check->footer("Each problem is listed with its record (CSV/JSONL line, JSON list index); exit 1 if there "
                  "is any. The daemon also checks the length after tokenization.\n"
                  "Example: cpmctl dataset check data/train.json");

  o.render.jobs = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  c.render = dataset->add_subcommand(
      "render", "Render LaTeX formulas (one per line) to PNG with latex + dvipng, and write DIR/labels.csv");
  c.render->add_option("formulas", o.render.formulas_file, "text file, one formula per line")->required();
  c.render->add_option("--out", o.render.out_dir, "output folder (NNNNNN.png by line number, labels.csv)")
      ->required();
  c.render->add_option("--dpi", o.render.dpi, "resolution (default 200)")->check(between(30, 2400));
  c.render->add_option("--jobs", o.render.jobs, "formulas rendered at once (default: the CPU count)")
      ->check(between(1, 256));
  c.render->add_option("--timeout-per-formula", o.render.timeout_seconds, "seconds (default 30)")
      ->check(positive());
  c.render->footer("A formula that does not compile is reported with its line number and skipped.\n"
                   "Example: cpmctl dataset render formulas.txt --out data && "
                   "cpmctl dataset prepare data/labels.csv --out data");
  return c;
}

int run_dataset_command(const DatasetCommands& c, const DatasetOptions& o, bool json) {
  if (c.prepare->parsed()) return run_prepare(o.prepare, json);
  if (c.check->parsed()) return run_check(o.check_file, json);
  return run_render(o.render, json);
}

}  // namespace cpmctl
