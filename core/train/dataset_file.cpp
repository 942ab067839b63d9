// SPDX-License-Identifier: Apache-2.0
#include "train/dataset_file.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <numeric>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/read_file.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace cpm::core::train {
namespace {

namespace fs = std::filesystem;
// ordered_json keeps an object's keys in file order, which is the order the recipe's Python dict
// (and so its image list) has.
using Json = nlohmann::ordered_json;

constexpr absl::string_view kUtf8Bom = "\xEF\xBB\xBF";

// The dataset's folder (canonical) and how image paths in it are resolved.
struct Folder {
  fs::path root;
  bool resolve_symlinks = true;
};

// `value` as a path inside the folder: relative, not leaving it lexically, and not leading outside
// through a symlink. Returns the resolved path, or the reason it is refused.
absl::StatusOr<std::string> resolve_image_path(const Folder& folder, const std::string& value) {
  const fs::path& root = folder.root;
  if (value.empty()) return absl::InvalidArgumentError("empty image path");
  const fs::path given(value);
  if (given.is_absolute()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "image path ", value, " is absolute; give it relative to the dataset's folder"));
  }
  auto inside = [&](const fs::path& p) {
    const fs::path rel = p.lexically_relative(root);
    return !rel.empty() && *rel.begin() != "..";
  };
  const fs::path joined = (root / given).lexically_normal();
  if (!inside(joined)) {
    return absl::InvalidArgumentError(
        absl::StrCat("image path ", value, " leaves the dataset's folder"));
  }
  // Symlinks are followed as far as the path exists; a missing file is reported later as such.
  std::error_code ec;
  const fs::path real = fs::weakly_canonical(joined, ec);
  if (ec) return joined.string();
  if (!inside(real)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "image path ", value, " leads outside the dataset's folder (to ", real.string(), ")"));
  }
  return folder.resolve_symlinks ? real.string() : joined.string();
}

// One JSON record of the recipe's format -> a record, or the reason it cannot be one.
absl::StatusOr<DatasetRecord> parse_json_record(const Json& j, const Folder& folder) {
  if (!j.is_object()) return absl::InvalidArgumentError("not a JSON object");
  DatasetRecord record;
  if (const auto id = j.find("id"); id != j.end()) {
    if (id->is_string()) {
      record.id = id->get<std::string>();
    } else if (id->is_number()) {
      record.id = id->dump();
    }
  }
  Conversation& c = record.conversation;

  const auto image = j.find("image");
  if (image == j.end() || image->is_null()) return absl::InvalidArgumentError("no image");
  auto add_image = [&](const std::string& tag, const Json& value) -> absl::Status {
    if (!value.is_string()) {
      return absl::InvalidArgumentError(absl::StrCat("image ", tag, " is not a path string"));
    }
    CPM_ASSIGN_OR_RETURN(std::string path, resolve_image_path(folder, value.get<std::string>()));
    c.images.push_back({tag, std::move(path)});
    return absl::OkStatus();
  };
  if (image->is_string()) {
    CPM_RETURN_IF_ERROR(add_image("<image>", *image));
  } else if (image->is_object()) {
    if (image->empty()) return absl::InvalidArgumentError("no image");
    for (const auto& [tag, value] : image->items()) CPM_RETURN_IF_ERROR(add_image(tag, value));
  } else {
    return absl::InvalidArgumentError(
        "\"image\" must be a path or an object of paths ({\"<image_00>\": path, ...})");
  }

  const auto turns = j.find("conversations");
  if (turns == j.end() || !turns->is_array()) {
    return absl::InvalidArgumentError("no \"conversations\" list");
  }
  for (size_t i = 0; i < turns->size(); ++i) {
    const Json& t = (*turns)[i];
    const auto role = t.is_object() ? t.find("role") : t.end();
    const auto content = t.is_object() ? t.find("content") : t.end();
    if (!t.is_object() || role == t.end() || content == t.end() || !role->is_string() ||
        !content->is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "turn ", i + 1, " is not {\"role\": string, \"content\": string}"));
    }
    c.turns.push_back({role->get<std::string>(), content->get<std::string>()});
  }
  if (c.turns.empty()) return absl::InvalidArgumentError("empty \"conversations\" list");
  return record;
}

void add_json_record(const Json& j, int64_t number, const Folder& folder, DatasetFile& file) {
  auto record = parse_json_record(j, folder);
  if (!record.ok()) {
    file.bad.push_back({number, std::string(record.status().message())});
    return;
  }
  record->number = number;
  file.records.push_back(std::move(*record));
}

absl::Status read_json_list(const std::string& text, const Folder& folder, DatasetFile& file) {
  file.numbering = RecordNumbering::kIndex;
  Json doc;
  try {
    doc = Json::parse(text);
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(file.path, ": not valid JSON: ", e.what()));
  }
  if (!doc.is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(file.path, ": expected a JSON list of records"));
  }
  for (size_t i = 0; i < doc.size(); ++i) add_json_record(doc[i], static_cast<int64_t>(i), folder, file);
  return absl::OkStatus();
}

void read_json_lines(absl::string_view text, const Folder& folder, DatasetFile& file) {
  file.numbering = RecordNumbering::kLine;
  int64_t line_number = 0;
  for (size_t begin = 0; begin < text.size();) {
    size_t end = text.find('\n', begin);
    if (end == absl::string_view::npos) end = text.size();
    const absl::string_view line = text.substr(begin, end - begin);
    begin = end + 1;
    ++line_number;
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    Json j;
    try {
      j = Json::parse(line.begin(), line.end());
    } catch (const Json::exception& e) {
      file.bad.push_back({line_number, absl::StrCat("not valid JSON: ", e.what())});
      continue;
    }
    add_json_record(j, line_number, folder, file);
  }
}

// One CSV row: its fields and the 1-based line it starts on.
struct CsvRow {
  int64_t line = 0;
  std::vector<std::string> fields;
};

// RFC 4180 with the leniency of Python's csv module: characters after a closing quote are kept.
// Blank lines are skipped (as pandas does). An unterminated quote ends the rows with an error row
// (no fields) at the line it opened on.
std::vector<CsvRow> parse_csv(absl::string_view text) {
  std::vector<CsvRow> rows;
  int64_t line = 1;
  size_t i = 0;
  while (i < text.size()) {
    if (text[i] == '\n' || text[i] == '\r') {  // a blank line
      if (text[i] == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      ++i;
      ++line;
      continue;
    }
    CsvRow row{line, {}};
    std::string field;
    bool in_quotes = false, quoted_at_start = false, row_done = false;
    while (i < text.size() && !row_done) {
      const char ch = text[i];
      if (in_quotes) {
        if (ch == '"' && i + 1 < text.size() && text[i + 1] == '"') {
          field += '"';
          i += 2;
          continue;
        }
        if (ch == '"') {
          in_quotes = false;
        } else {
          if (ch == '\n') ++line;
          field += ch;
        }
        ++i;
        continue;
      }
      if (ch == '"' && field.empty() && !quoted_at_start) {
        in_quotes = quoted_at_start = true;
      } else if (ch == ',') {
        row.fields.push_back(std::move(field));
        field.clear();
        quoted_at_start = false;
      } else if (ch == '\n' || ch == '\r') {
        if (ch == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
        ++line;
        row_done = true;
      } else {
        field += ch;
      }
      ++i;
    }
    if (in_quotes) {
      rows.push_back({row.line, {}});
      break;
    }
    row.fields.push_back(std::move(field));
    rows.push_back(std::move(row));
  }
  return rows;
}

absl::Status read_csv(absl::string_view text, const Folder& folder, const ReadOptions& options,
                      DatasetFile& file) {
  file.numbering = RecordNumbering::kLine;
  std::vector<CsvRow> rows = parse_csv(text);
  if (rows.empty()) return absl::InvalidArgumentError(absl::StrCat(file.path, ": empty CSV file"));
  const std::vector<std::string>& header = rows[0].fields;
  const auto column = [&](const std::string& name) -> std::optional<size_t> {
    const auto it = std::find(header.begin(), header.end(), name);
    if (it == header.end()) return std::nullopt;
    return static_cast<size_t>(it - header.begin());
  };
  const auto image_column = column("image_path"), text_column = column("text");
  if (!image_column || !text_column) {
    return absl::InvalidArgumentError(absl::StrCat(
        file.path, ": the CSV header (line ", rows[0].line,
        ") must name the columns image_path and text"));
  }
  for (size_t r = 1; r < rows.size(); ++r) {
    const CsvRow& row = rows[r];
    if (row.fields.empty()) {
      file.bad.push_back({row.line, "unterminated quoted field (it runs to the end of the file)"});
      continue;
    }
    if (row.fields.size() != header.size()) {
      file.bad.push_back({row.line, absl::StrCat("expected ", header.size(), " fields, found ",
                                                 row.fields.size())});
      continue;
    }
    auto path = resolve_image_path(folder, row.fields[*image_column]);
    if (!path.ok()) {
      file.bad.push_back({row.line, std::string(path.status().message())});
      continue;
    }
    DatasetRecord record;
    record.number = row.line;
    record.conversation.images.push_back({"<image>", std::move(*path)});
    record.conversation.turns = {{"user", "<image>\n" + options.csv_prompt},
                                 {"assistant", row.fields[*text_column]}};
    file.records.push_back(std::move(record));
  }
  return absl::OkStatus();
}

// splitmix64 (Steele, Lea and Flood 2014): a fixed, portable stream of 64-bit values.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, bound) without modulo bias: values below 2^64 mod bound are redrawn.
  uint64_t below(uint64_t bound) {
    const uint64_t threshold = (0 - bound) % bound;
    for (;;) {
      const uint64_t r = next();
      if (r >= threshold) return r % bound;
    }
  }

 private:
  uint64_t state_;
};

}  // namespace

std::string record_location(RecordNumbering numbering, int64_t number) {
  return absl::StrCat(numbering == RecordNumbering::kLine ? "line " : "index ", number);
}

absl::StatusOr<DatasetFile> read_dataset(const std::string& path, const ReadOptions& options) {
  DatasetFile file;
  file.path = path;
  CPM_ASSIGN_OR_RETURN(std::string text, read_whole_file(path));
  absl::string_view body = text;
  if (absl::StartsWith(body, kUtf8Bom)) body.remove_prefix(kUtf8Bom.size());

  std::error_code ec;
  const Folder folder{fs::weakly_canonical(fs::absolute(path, ec).parent_path(), ec),
                      options.resolve_symlinks};
  if (ec) return absl::UnavailableError(absl::StrCat(path, ": cannot resolve its folder: ", ec.message()));

  DatasetFormat format = options.format;
  if (format == DatasetFormat::kAuto) {
    const std::string ext = absl::AsciiStrToLower(fs::path(path).extension().string());
    if (ext == ".json" || ext == ".jsonl") {
      format = DatasetFormat::kConversationJson;
    } else if (ext == ".csv") {
      format = DatasetFormat::kCsv;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": cannot tell the dataset format from the name; use .json, .jsonl or .csv"));
    }
  }
  if (format == DatasetFormat::kCsv) {
    CPM_RETURN_IF_ERROR(read_csv(body, folder, options, file));
  } else if (absl::StartsWith(absl::StripLeadingAsciiWhitespace(body), "[")) {
    CPM_RETURN_IF_ERROR(read_json_list(std::string(body), folder, file));
  } else {
    read_json_lines(body, folder, file);
  }
  return file;
}

absl::StatusOr<std::vector<size_t>> eval_indices(size_t n, const SplitOptions& options) {
  if (options.eval_fraction && options.eval_size) {
    return absl::InvalidArgumentError("give eval_fraction or eval_size, not both");
  }
  size_t count = 0;
  if (options.eval_size) {
    const int64_t size = *options.eval_size;
    if (size < 0 || (size > 0 && static_cast<uint64_t>(size) >= n)) {
      return absl::InvalidArgumentError(absl::StrCat("eval_size ", size, " for ", n,
                                                     " records; it must leave a record to train on"));
    }
    count = static_cast<size_t>(size);
  } else {
    const double fraction = options.eval_fraction.value_or(0.05);
    if (!(fraction >= 0.0 && fraction < 1.0)) {
      return absl::InvalidArgumentError(absl::StrCat("eval_fraction ", fraction, " is outside [0, 1)"));
    }
    // ceil as Hugging Face datasets and scikit-learn size a test split, forgiving the rounding
    // error of the product (0.05 * 60 is 3.0000000000000004).
    const double wanted = std::ceil(fraction * static_cast<double>(n) - 1e-9);
    count = n == 0 ? 0 : std::min(static_cast<size_t>(std::max(wanted, 0.0)), n - 1);
    if (!options.eval_fraction) count = std::min<size_t>(count, 500);
  }
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  SplitMix64 rng(static_cast<uint64_t>(options.seed));
  for (size_t i = n; i > 1; --i) std::swap(order[i - 1], order[rng.below(i)]);
  order.resize(count);
  std::sort(order.begin(), order.end());
  return order;
}

absl::StatusOr<DatasetSplit> split_dataset(std::vector<DatasetRecord> records,
                                           const SplitOptions& options) {
  CPM_ASSIGN_OR_RETURN(const std::vector<size_t> eval, eval_indices(records.size(), options));
  DatasetSplit split;
  size_t next_eval = 0;
  for (size_t i = 0; i < records.size(); ++i) {
    if (next_eval < eval.size() && eval[next_eval] == i) {
      split.eval.push_back(std::move(records[i]));
      ++next_eval;
    } else {
      split.train.push_back(std::move(records[i]));
    }
  }
  return split;
}

}  // namespace cpm::core::train
