// SPDX-License-Identifier: Apache-2.0
#include "dataset_prepare.h"

#include <filesystem>
#include <fstream>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "dataset_check.h"

namespace cpmctl {
namespace {

namespace fs = std::filesystem;

bool inside(const fs::path& path, const fs::path& folder) {
  const fs::path rel = path.lexically_relative(folder);
  return !rel.empty() && *rel.begin() != "..";
}

// Writes `text` to `path` through a temporary file and a rename, so a reader never sees half.
absl::Status write_atomically(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    if (!out.flush()) return absl::UnavailableError(absl::StrCat("cannot write ", tmp.string()));
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot write ", path.string(), ": ", ec.message()));
  return absl::OkStatus();
}

// The recipe's JSON list, one record per line. The records hold one image each (from the CSV),
// already relative to the output folder.
std::string json_list(const std::vector<train::DatasetRecord>& records) {
  std::string text = "[";
  for (size_t i = 0; i < records.size(); ++i) {
    const auto& c = records[i].conversation;
    nlohmann::ordered_json turns = nlohmann::ordered_json::array();
    for (const auto& t : c.turns) turns.push_back({{"role", t.role}, {"content", t.content}});
    const nlohmann::ordered_json j = {
        {"id", records[i].id}, {"image", c.images.at(0).path}, {"conversations", turns}};
    absl::StrAppend(&text, i ? ",\n " : "\n ",
                    j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  }
  absl::StrAppend(&text, records.empty() ? "]\n" : "\n]\n");
  return text;
}

}  // namespace

absl::StatusOr<PrepareResult> prepare_dataset(const PrepareOptions& options) {
  train::ReadOptions read;
  read.format = train::DatasetFormat::kCsv;
  read.csv_prompt = options.prompt;
  read.resolve_symlinks = false;  // the JSON names the files as the CSV does
  auto checked = check_dataset(options.labels_csv, read);
  if (!checked.ok()) return checked.status();
  PrepareResult result;
  if (!checked->bad.empty()) {
    if (!options.skip_bad_records) {
      return absl::InvalidArgumentError(absl::StrCat(
          checked->describe(), "\nfix them, or pass --skip-bad-records to leave them out"));
    }
    for (const auto& b : checked->bad) {
      result.skipped.push_back(absl::StrCat(checked->where(b.number), ": ", b.reason));
    }
  }
  std::vector<train::DatasetRecord>& records = checked->file.records;
  if (records.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(options.labels_csv, " has no usable record"));
  }

  const fs::path out = fs::weakly_canonical(fs::absolute(options.out_dir));
  const fs::path csv_folder = fs::weakly_canonical(fs::absolute(options.labels_csv).parent_path());

  // Where each image will be, relative to the output folder; copies planned first, made after
  // every record passed.
  std::vector<std::pair<fs::path, fs::path>> copies;
  for (train::DatasetRecord& record : records) {
    auto& image = record.conversation.images.at(0);
    const fs::path source(image.path);
    fs::path target = source;
    if (!inside(source, out)) {
      if (!options.copy_images) {
        return absl::FailedPreconditionError(absl::StrCat(
            "image ", source.string(), " lies outside ", out.string(),
            ", and the daemon reads only images inside the dataset's folder: give --out a folder "
            "that holds the images (such as ", csv_folder.string(), ") or pass --copy-images"));
      }
      target = out / source.lexically_relative(csv_folder);
      copies.emplace_back(source, target);
    }
    image.path = target.lexically_relative(out).generic_string();
  }

  train::SplitOptions split_options;
  split_options.eval_size = options.eval_size;
  split_options.eval_fraction = options.eval_fraction;
  split_options.seed = options.seed;
  // Ids number the records in CSV order, before the split, so they name the same row either way.
  for (size_t i = 0; i < records.size(); ++i) records[i].id = std::to_string(i);
  auto split = train::split_dataset(std::move(records), split_options);
  if (!split.ok()) return absl::FailedPreconditionError(split.status().message());

  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot create ", out.string(), ": ", ec.message()));
  for (const auto& [source, target] : copies) {
    fs::create_directories(target.parent_path(), ec);
    if (!ec) fs::copy_file(source, target, fs::copy_options::overwrite_existing, ec);
    if (ec) {
      return absl::UnavailableError(
          absl::StrCat("cannot copy ", source.string(), " to ", target.string(), ": ", ec.message()));
    }
  }
  result.copied_images = static_cast<int64_t>(copies.size());
  result.train_json = (out / "train.json").string();
  result.eval_json = (out / "eval.json").string();
  result.train_records = static_cast<int64_t>(split->train.size());
  result.eval_records = static_cast<int64_t>(split->eval.size());
  if (auto s = write_atomically(result.train_json, json_list(split->train)); !s.ok()) return s;
  if (auto s = write_atomically(result.eval_json, json_list(split->eval)); !s.ok()) return s;
  return result;
}

}  // namespace cpmctl
