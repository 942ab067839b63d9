// SPDX-License-Identifier: Apache-2.0
//
// The sentencepiece library lives in its own loadable module (libcpm_sentencepiece.so), opened on
// demand with RTLD_DEEPBIND: Debian's libsentencepiece carries a private copy of protobuf whose
// exported symbols would otherwise collide with the libprotobuf that LibTorch loads (the process
// crashed during start-up when both were linked). This header is the module's whole interface and
// uses only std:: types (sentencepiece_processor.h also clashes with Abseil's string_view).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace cpm::core::io {

class SentencePieceBackend {
 public:
  virtual ~SentencePieceBackend() = default;
  // Each returns an empty string on success, else the library's error text.
  virtual std::string load(const std::string& path) = 0;
  virtual std::string encode(std::string_view text, std::vector<int>& ids) const = 0;
  virtual std::string decode(const std::vector<int>& ids, std::string& text) const = 0;
  virtual int size() const = 0;
  virtual int piece_to_id(std::string_view piece) const = 0;
  virtual std::string id_to_piece(int id) const = 0;
  virtual bool is_control(int id) const = 0;
  virtual bool is_unknown(int id) const = 0;
};

// The module's one exported symbol: `SentencePieceBackend* cpm_sentencepiece_create()`.
inline constexpr const char* kSentencePieceFactory = "cpm_sentencepiece_create";
inline constexpr const char* kSentencePieceModule = "libcpm_sentencepiece.so";

}  // namespace cpm::core::io
