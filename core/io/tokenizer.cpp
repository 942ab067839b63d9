// SPDX-License-Identifier: Apache-2.0
//
// Finding a checkpoint's tokenizer.
#include <filesystem>
#include <fstream>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "io/tokenizer.h"

namespace cpm::core::io {
namespace {

namespace fs = std::filesystem;

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> load_tokenizer(const std::string& dir) {
  std::error_code ec;
  fs::path json_path, model_path;
  if (fs::is_directory(dir, ec)) {
    json_path = fs::path(dir) / "tokenizer.json";
    model_path = fs::path(dir) / "tokenizer.model";
  } else if (dir.ends_with(".model")) {
    model_path = dir;
  } else {
    json_path = dir;
  }
  if (!json_path.empty() && fs::exists(json_path, ec)) {
    std::ifstream in(json_path, std::ios::binary);
    if (!in) return absl::UnavailableError(absl::StrCat(json_path.string(), ": cannot be read"));
    const std::string text((std::istreambuf_iterator<char>(in)), {});
    return load_bpe_tokenizer_json(text, json_path.string());
  }
  if (!model_path.empty() && fs::exists(model_path, ec)) {
    // Debian's libsentencepiece carries its own protobuf-lite, whose exported symbols collide with
    // the libprotobuf that LibTorch loads (a crash at start-up), so it is not linked yet.
    return absl::UnimplementedError(absl::StrCat(
        model_path.string(), ": SentencePiece tokenizers are not supported yet; convert it to a "
        "tokenizer.json (transformers' AutoTokenizer.from_pretrained(...).save_pretrained(...))"));
  }
  return absl::NotFoundError(
      absl::StrCat(dir, ": no tokenizer.json or tokenizer.model; is it a checkpoint directory?"));
}

}  // namespace cpm::core::io
