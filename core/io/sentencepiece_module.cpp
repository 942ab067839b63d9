// SPDX-License-Identifier: Apache-2.0
//
// libcpm_sentencepiece.so: SentencePieceBackend over the sentencepiece library (see
// sentencepiece_backend.h for why this is a separate module). Includes no Abseil header.
#include <sentencepiece_processor.h>

#include "io/sentencepiece_backend.h"

namespace cpm::core::io {
namespace {

class Backend final : public SentencePieceBackend {
 public:
  std::string load(const std::string& path) override { return text(processor_.Load(path)); }
  std::string encode(std::string_view input, std::vector<int>& ids) const override {
    return text(processor_.Encode(input, &ids));
  }
  std::string decode(const std::vector<int>& ids, std::string& out) const override {
    return text(processor_.Decode(ids, &out));
  }
  int size() const override { return processor_.GetPieceSize(); }
  int piece_to_id(std::string_view piece) const override { return processor_.PieceToId(piece); }
  std::string id_to_piece(int id) const override { return processor_.IdToPiece(id); }
  bool is_control(int id) const override { return processor_.IsControl(id); }
  bool is_unknown(int id) const override { return processor_.IsUnknown(id); }

 private:
  static std::string text(const sentencepiece::util::Status& s) {
    return s.ok() ? std::string() : s.ToString();
  }
  sentencepiece::SentencePieceProcessor processor_;
};

}  // namespace
}  // namespace cpm::core::io

extern "C" __attribute__((visibility("default"))) cpm::core::io::SentencePieceBackend*
cpm_sentencepiece_create() {
  return new cpm::core::io::Backend();
}
