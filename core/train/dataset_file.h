// SPDX-License-Identifier: Apache-2.0
//
// Fine-tuning dataset files in the reference recipe's formats, parsed record by record, and the
// deterministic train/eval split. LibTorch-free (part of cpm_portable): cpmctl reads, checks and
// splits datasets with this same code. train/dataset.h adds the checks that need the model's
// tokenizer and image decoder.
//
// Formats:
//   - Conversation JSON: a JSON list (or JSON Lines, one object per line) of
//     {"id", "image": path | {"<image_00>": path, ...},
//      "conversations": [{"role": "user" | "assistant", "content": text}, ...]}
//     as the OpenBMB recipe's finetune/dataset.py reads it. Keys keep their file order (the order
//     the recipe stacks the images in).
//   - CSV: `image_path,text` with a header row (RFC 4180: quoted fields may hold commas, quotes as
//     "" and newlines), as the LaTeX-OCR recipe's data2csv.py writes it. Each row becomes a
//     one-turn conversation: the user turn is `<image>` + "\n" + the question (where the recipe
//     puts an image without a tag, and what chat() sends at inference), the answer is `text`.
// Image paths are relative to the dataset file's folder; absolute paths and paths that leave the
// folder (through "..", or a symlink pointing outside) are bad records.
//
// Records are numbered by their 1-based line (CSV, JSON Lines; the header is line 1) or their
// 0-based index (JSON list, as the recipe's raw_data[i]).
//
// Thread-safe: free functions over values.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "train/conversation_format.h"

namespace cpm::core::train {

enum class DatasetFormat {
  kAuto,              // by file name: *.json / *.jsonl -> conversation JSON, *.csv -> CSV
  kConversationJson,  // a JSON list, or JSON Lines when the file does not start with '['
  kCsv,
};

// The user question asked of every CSV row unless DataOptions.csv_prompt says otherwise: the
// LaTeX-OCR fine-tuning recipe's prompt, verbatim (its csv2json.py turns data2csv.py's
// `image_path,text` rows into conversations with it). Source: garspace2/Qwen2-VL-finetune-LatexOCR,
// csv2json.py @2cca641 (the Qwen2-VL LaTeX_OCR tutorial that data2csv.py comes from). It reads
// "You are a LaTeX OCR assistant; read the user's photo and turn it into a LaTeX formula."
inline constexpr std::string_view kDefaultCsvPrompt =
    "你是一个LaText OCR助手,目标是读取用户输入的照片，转换成LaTex公式。";

struct ReadOptions {
  // Default: from the file name.
  DatasetFormat format = DatasetFormat::kAuto;
  // The CSV rows' question. Default: kDefaultCsvPrompt.
  std::string csv_prompt = std::string(kDefaultCsvPrompt);
  // Image paths with symlinks resolved (true), or as the record names them, joined to the
  // dataset's folder and normalized (false: what a client uploading the folder needs, since the
  // daemon reads the uploaded copy by those names). Either way a path that leaves the folder,
  // lexically or through a symlink, is a bad record. Default: true.
  bool resolve_symlinks = true;
};

enum class RecordNumbering {
  kLine,   // 1-based line of the file where the record starts
  kIndex,  // 0-based position in the JSON list
};

struct DatasetRecord {
  int64_t number = 0;  // see RecordNumbering
  std::string id;      // the record's "id" (JSON), empty when absent
  Conversation conversation;
};

// "line 12" / "index 3".
std::string record_location(RecordNumbering numbering, int64_t number);

struct BadRecord {
  int64_t number = 0;
  std::string reason;
};

// A dataset file, parsed. Records that could not be read at all (invalid JSON, a missing field, an
// image path outside the folder) are already in `bad`; the rest still need validate_dataset().
struct DatasetFile {
  std::string path;
  RecordNumbering numbering = RecordNumbering::kLine;
  std::vector<DatasetRecord> records;
  std::vector<BadRecord> bad;
};

// Reads and parses the file. NOT_FOUND / UNAVAILABLE when it cannot be read, INVALID_ARGUMENT when
// it is unusable as a whole (not a JSON list, a CSV header without image_path and text, an unknown
// file type); problems of single records become BadRecords.
absl::StatusOr<DatasetFile> read_dataset(const std::string& path, const ReadOptions& options = {});

struct SplitOptions {
  // Give at most one. Neither: 5% of the records, at most 500. A fraction takes
  // ceil(fraction * n) records (at most n - 1); a size takes exactly that many (less than n).
  std::optional<double> eval_fraction = std::nullopt;
  std::optional<int64_t> eval_size = std::nullopt;
  // Seed of the shuffle that picks the eval records. Default: 42.
  int64_t seed = 42;
};

// Which of n records go to eval: a Fisher-Yates shuffle of 0..n-1 driven by splitmix64(seed), its
// first eval-count entries, sorted. The same on every machine and standard library.
// INVALID_ARGUMENT for both options set, a fraction outside [0, 1), a negative size, or a size
// that leaves nothing to train on.
absl::StatusOr<std::vector<size_t>> eval_indices(size_t n, const SplitOptions& options);

struct DatasetSplit {
  std::vector<DatasetRecord> train;  // in file order
  std::vector<DatasetRecord> eval;   // in file order
};
absl::StatusOr<DatasetSplit> split_dataset(std::vector<DatasetRecord> records,
                                           const SplitOptions& options);

}  // namespace cpm::core::train
