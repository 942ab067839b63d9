// SPDX-License-Identifier: Apache-2.0
// Shared by the core/train data tests: the MiniCPM-o tokenizer and a default example builder.
#pragma once

#include <fstream>
#include <iterator>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "io/prompt.h"
#include "io/tokenizer.h"
#include "train/conversation.h"

namespace cpm::core::train::testing {

// The real Qwen tokenizer plus MiniCPM-o's tokens, added as `cpm-tool mkmodel` adds them (the
// tokenizer of the tiny checkpoint the goldens were made with).
inline const io::Tokenizer& minicpm_tokenizer() {
  static const std::unique_ptr<io::Tokenizer> tokenizer = [] {
    std::ifstream in(CPM_QWEN_TOKENIZER_DIR "/tokenizer.json", std::ios::binary);
    const std::string base(std::istreambuf_iterator<char>(in), {});
    std::vector<std::string> tokens(std::begin(io::kMiniCpmSpecialTokens),
                                    std::end(io::kMiniCpmSpecialTokens));
    tokens.push_back("<unk>");
    auto json = io::add_special_tokens(base, tokens);
    if (!json.ok()) throw std::runtime_error(std::string(json.status().message()));
    auto t = io::load_bpe_tokenizer_json(*json, "qwen+minicpm");
    if (!t.ok()) throw std::runtime_error(std::string(t.status().message()));
    return std::move(*t);
  }();
  return *tokenizer;
}

inline ExampleBuilder builder(const ExampleOptions& options = {}) {
  auto b = ExampleBuilder::create(minicpm_tokenizer(), io::ChatTemplate::qwen25(),
                                  io::PreprocessorConfig{}, options);
  if (!b.ok()) throw std::runtime_error(std::string(b.status().message()));
  return std::move(*b);
}

inline int32_t id_of(const std::string& token) { return *minicpm_tokenizer().token_to_id(token); }

}  // namespace cpm::core::train::testing
