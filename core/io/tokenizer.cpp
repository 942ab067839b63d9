// SPDX-License-Identifier: Apache-2.0
//
// Finding a checkpoint's tokenizer, and SentencePiece checkpoints through the loadable module.
#include "io/tokenizer.h"

#include <dlfcn.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "io/sentencepiece_backend.h"

namespace cpm::core::io {
namespace {

namespace fs = std::filesystem;

using Factory = SentencePieceBackend* (*)();

// Opens libcpm_sentencepiece.so from ../lib beside the running executable (the build tree and
// installs both put binaries in bin/ or tests/ and libraries in lib/), once per process.
absl::StatusOr<Factory> sentencepiece_factory() {
  static std::once_flag once;
  static absl::StatusOr<Factory> result = absl::InternalError("not loaded");
  std::call_once(once, [] {
    std::error_code ec;
    const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
    const fs::path module = exe.parent_path().parent_path() / "lib" / kSentencePieceModule;
    // DEEPBIND: the module and libsentencepiece resolve their symbols among themselves first, so
    // its private protobuf never meets the process's libprotobuf.
    void* handle = dlopen(module.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (handle == nullptr) {
      result = absl::UnavailableError(absl::StrCat("SentencePiece support: cannot load ",
                                                   module.string(), ": ", dlerror()));
      return;
    }
    void* symbol = dlsym(handle, kSentencePieceFactory);
    if (symbol == nullptr) {
      result = absl::UnavailableError(absl::StrCat(module.string(), " has no ", kSentencePieceFactory));
      return;
    }
    result = reinterpret_cast<Factory>(symbol);
  });
  return result;
}

class SentencePieceTokenizer final : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(std::unique_ptr<SentencePieceBackend> backend)
      : backend_(std::move(backend)) {}

  absl::StatusOr<std::vector<int32_t>> encode(std::string_view text) const override {
    std::vector<int> ids;
    const std::string error = backend_->encode(text, ids);
    if (!error.empty()) return absl::InvalidArgumentError(error);
    return std::vector<int32_t>(ids.begin(), ids.end());
  }

  absl::StatusOr<std::string> decode(std::span<const int32_t> ids, bool skip_special) const override {
    std::vector<int> kept;
    for (const int32_t id : ids) {
      if (id < 0 || id >= vocab_size()) {
        return absl::InvalidArgumentError(
            absl::StrCat("token id ", id, " is not in the vocabulary of ", vocab_size(), " tokens"));
      }
      if (!(skip_special && is_special(id))) kept.push_back(id);
    }
    std::string text;
    const std::string error = backend_->decode(kept, text);
    if (!error.empty()) return absl::InvalidArgumentError(error);
    return text;
  }

  int32_t vocab_size() const override { return backend_->size(); }
  std::optional<int32_t> token_to_id(std::string_view token) const override {
    const int id = backend_->piece_to_id(token);
    // Unknown pieces map to the unk id; only the unk piece itself should.
    if (backend_->is_unknown(id) && backend_->id_to_piece(id) != token) return std::nullopt;
    return id;
  }
  bool is_special(int32_t id) const override {
    return backend_->is_control(id) || backend_->is_unknown(id);
  }

 private:
  std::unique_ptr<SentencePieceBackend> backend_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> load_sentencepiece_model(const std::string& path) {
  auto factory = sentencepiece_factory();
  if (!factory.ok()) return factory.status();
  std::unique_ptr<SentencePieceBackend> backend((*factory)());
  const std::string error = backend->load(path);
  if (!error.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a SentencePiece model: ", error));
  }
  return std::unique_ptr<Tokenizer>(std::make_unique<SentencePieceTokenizer>(std::move(backend)));
}

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
    return load_sentencepiece_model(model_path.string());
  }
  return absl::NotFoundError(
      absl::StrCat(dir, ": no tokenizer.json or tokenizer.model; is it a checkpoint directory?"));
}

}  // namespace cpm::core::io
