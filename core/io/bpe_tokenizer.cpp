// SPDX-License-Identifier: Apache-2.0
//
// Byte-level BPE from a Hugging Face tokenizer.json (Qwen2 / GPT-2 family), mirroring the
// `tokenizers` pipeline: added tokens split out first (leftmost-longest), NFC normalization, the
// Split pre-tokenizer regex (pieces are the matches and the gaps between them), the ByteLevel byte
// -> unicode mapping, then BPE merges by rank. Decoding maps the byte-level characters back.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <array>
#include <limits>
#include <mutex>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "io/tokenizer.h"
#include "nlohmann/json.hpp"

namespace cpm::core::io {
namespace {

using nlohmann::json;

// GPT-2's bytes_to_unicode: printable bytes stand for themselves, the other 68 bytes map to
// U+0100 and up, so every byte string becomes printable text.
std::array<uint32_t, 256> byte_to_codepoint() {
  std::array<uint32_t, 256> table{};
  std::array<bool, 256> direct{};
  for (int b = 33; b <= 126; ++b) direct[b] = true;
  for (int b = 161; b <= 172; ++b) direct[b] = true;
  for (int b = 174; b <= 255; ++b) direct[b] = true;
  uint32_t next = 256;
  for (int b = 0; b < 256; ++b) table[b] = direct[b] ? static_cast<uint32_t>(b) : next++;
  return table;
}

void append_utf8(std::string& out, uint32_t cp) {
  uint8_t buf[4];
  const auto n = utf8proc_encode_char(static_cast<utf8proc_int32_t>(cp), buf);
  out.append(reinterpret_cast<const char*>(buf), static_cast<size_t>(n));
}

bool valid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(s.data());
  utf8proc_ssize_t left = static_cast<utf8proc_ssize_t>(s.size());
  while (left > 0) {
    utf8proc_int32_t cp;
    const utf8proc_ssize_t n = utf8proc_iterate(p, left, &cp);
    if (n <= 0 || cp < 0) return false;
    p += n;
    left -= n;
  }
  return true;
}

// Invalid sequences become U+FFFD, one per maximal invalid prefix, like Rust's from_utf8_lossy.
std::string utf8_lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(s.data());
  utf8proc_ssize_t left = static_cast<utf8proc_ssize_t>(s.size());
  while (left > 0) {
    utf8proc_int32_t cp;
    const utf8proc_ssize_t n = utf8proc_iterate(p, left, &cp);
    if (n > 0 && cp >= 0) {
      out.append(reinterpret_cast<const char*>(p), static_cast<size_t>(n));
      p += n;
      left -= n;
      continue;
    }
    // Skip the longest prefix that could still have started a valid sequence.
    utf8proc_ssize_t skip = 1;
    const uint8_t lead = p[0];
    const int need = lead >= 0xF0 && lead <= 0xF4 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC2 && lead <= 0xDF ? 2 : 1;
    while (skip < need && skip < left && (p[skip] & 0xC0) == 0x80) ++skip;
    out += "\xEF\xBF\xBD";
    p += skip;
    left -= skip;
  }
  return out;
}

std::string nfc(std::string_view s) {
  utf8proc_uint8_t* out = nullptr;
  const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()),
                                          static_cast<utf8proc_ssize_t>(s.size()), &out,
                                          static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  if (n < 0) return std::string(s);  // input was validated; map() fails only on invalid UTF-8
  std::string result(reinterpret_cast<const char*>(out), static_cast<size_t>(n));
  std::free(out);
  return result;
}

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool special = false;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
  bool normalized = false;
};

struct Segment {
  std::string text;
  int32_t added_id = -1;  // >= 0: an added token, emitted as is
};

bool is_word_char(std::string_view s, size_t pos, bool before) {
  // A crude but sufficient check for single_word: ASCII alphanumerics and any non-ASCII byte.
  if (before) {
    if (pos == 0) return false;
    const unsigned char c = static_cast<unsigned char>(s[pos - 1]);
    return std::isalnum(c) || c >= 0x80 || c == '_';
  }
  if (pos >= s.size()) return false;
  const unsigned char c = static_cast<unsigned char>(s[pos]);
  return std::isalnum(c) || c >= 0x80 || c == '_';
}

class BpeTokenizer final : public Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<Tokenizer>> load(const std::string& text,
                                                         const std::string& source);
  ~BpeTokenizer() override {
    if (regex_ != nullptr) pcre2_code_free(regex_);
  }

  absl::StatusOr<std::vector<int32_t>> encode(std::string_view text) const override;
  absl::StatusOr<std::string> decode(std::span<const int32_t> ids, bool skip_special) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(id_to_token_.size()); }
  std::optional<int32_t> token_to_id(std::string_view token) const override {
    const auto it = vocab_.find(std::string(token));
    return it == vocab_.end() ? std::nullopt : std::optional<int32_t>(it->second);
  }
  bool is_special(int32_t id) const override {
    return id >= 0 && id < vocab_size() && special_[static_cast<size_t>(id)];
  }

 private:
  // Splits `text` around the added tokens with the given `normalized` flag (leftmost-longest).
  void split_added(std::string_view text, bool normalized, std::vector<Segment>& out) const;
  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const;
  void bpe(const std::string& word, std::vector<int32_t>& out) const;

  std::unordered_map<std::string, int32_t> vocab_;  // token_to_id: added tokens over the model's
  std::vector<std::string> id_to_token_;
  std::vector<bool> special_;
  std::vector<bool> added_;
  std::vector<AddedToken> added_tokens_;  // longest first
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges_;  // (a, b) -> (rank, merged)
  std::array<int32_t, 256> byte_id_{};    // id of each byte's single-character token
  std::array<uint32_t, 256> byte_cp_{};
  std::unordered_map<uint32_t, uint8_t> cp_byte_;
  bool nfc_ = false;
  pcre2_code* regex_ = nullptr;
  bool split_invert_ = false;
  mutable std::mutex cache_mu_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

absl::StatusOr<std::unique_ptr<Tokenizer>> BpeTokenizer::load(const std::string& text,
                                                              const std::string& source) {
  auto fail = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", what));
  };
  json doc;
  try {
    doc = json::parse(text);
  } catch (const json::exception& e) {
    return fail(absl::StrCat("not valid JSON: ", e.what()));
  }
  auto t = std::make_unique<BpeTokenizer>();
  try {
    const json& model = doc.at("model");
    if (model.value("type", "") != "BPE") return fail("model.type must be \"BPE\"");
    if (!model.value("continuing_subword_prefix", json("")).is_null() &&
        !model.value("continuing_subword_prefix", std::string()).empty()) {
      return fail("continuing_subword_prefix is not supported");
    }
    if (model.value("byte_fallback", false)) return fail("byte_fallback BPE is not supported");
    // The model's vocabulary drives BPE; added tokens live beside it (an added token may spell an
    // existing vocabulary entry and must not change how plain text is merged).
    std::unordered_map<std::string, int32_t> model_vocab;
    int32_t max_id = -1;
    for (const auto& [token, id] : model.at("vocab").items()) {
      model_vocab[token] = id.get<int32_t>();
      max_id = std::max(max_id, id.get<int32_t>());
    }
    t->vocab_ = model_vocab;
    for (const json& a : doc.value("added_tokens", json::array())) {
      AddedToken tok;
      tok.content = a.at("content").get<std::string>();
      tok.id = a.at("id").get<int32_t>();
      tok.special = a.value("special", false);
      tok.lstrip = a.value("lstrip", false);
      tok.rstrip = a.value("rstrip", false);
      tok.single_word = a.value("single_word", false);
      tok.normalized = a.value("normalized", !tok.special);
      if (tok.content.empty() || tok.id < 0) return fail("an added token is empty or has a negative id");
      t->vocab_[tok.content] = tok.id;
      max_id = std::max(max_id, tok.id);
      t->added_tokens_.push_back(std::move(tok));
    }
    if (max_id < 0) return fail("the vocabulary is empty");
    t->id_to_token_.assign(static_cast<size_t>(max_id) + 1, std::string());
    t->special_.assign(static_cast<size_t>(max_id) + 1, false);
    t->added_.assign(static_cast<size_t>(max_id) + 1, false);
    for (const auto& [token, id] : model_vocab) t->id_to_token_[static_cast<size_t>(id)] = token;
    for (const AddedToken& a : t->added_tokens_) {
      t->id_to_token_[static_cast<size_t>(a.id)] = a.content;
      t->special_[static_cast<size_t>(a.id)] = a.special;
      t->added_[static_cast<size_t>(a.id)] = true;
    }
    std::stable_sort(t->added_tokens_.begin(), t->added_tokens_.end(),
                     [](const AddedToken& a, const AddedToken& b) { return a.content.size() > b.content.size(); });

    t->byte_cp_ = byte_to_codepoint();
    for (int b = 0; b < 256; ++b) {
      std::string ch;
      append_utf8(ch, t->byte_cp_[b]);
      const auto it = model_vocab.find(ch);
      if (it == model_vocab.end()) return fail(absl::StrCat("byte ", b, " has no token; not a byte-level BPE"));
      t->byte_id_[b] = it->second;
      t->cp_byte_[t->byte_cp_[b]] = static_cast<uint8_t>(b);
    }
    int32_t rank = 0;
    for (const json& m : model.at("merges")) {
      std::string a, b;
      if (m.is_string()) {  // "a b"
        const std::string s = m.get<std::string>();
        const auto space = s.find(' ', 1);
        if (space == std::string::npos) return fail(absl::StrCat("merge '", s, "' is not \"a b\""));
        a = s.substr(0, space);
        b = s.substr(space + 1);
      } else {  // ["a", "b"]
        a = m.at(0).get<std::string>();
        b = m.at(1).get<std::string>();
      }
      const auto ia = model_vocab.find(a), ib = model_vocab.find(b), im = model_vocab.find(a + b);
      if (ia == model_vocab.end() || ib == model_vocab.end() || im == model_vocab.end()) {
        return fail(absl::StrCat("merge '", a, " ", b, "' uses tokens missing from the vocabulary"));
      }
      const uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(ia->second)) << 32) |
                           static_cast<uint32_t>(ib->second);
      t->merges_.emplace(key, std::make_pair(rank++, im->second));
    }

    const json& normalizer = doc.value("normalizer", json());
    if (!normalizer.is_null()) {
      if (normalizer.value("type", "") != "NFC") {
        return fail(absl::StrCat("normalizer ", normalizer.value("type", "?"), " is not supported (NFC is)"));
      }
      t->nfc_ = true;
    }
    // Pre-tokenizer: [Split(regex, Isolated)] then ByteLevel(use_regex=false), as Qwen2 ships it.
    const json& pre = doc.at("pre_tokenizer");
    std::vector<json> steps;
    if (pre.value("type", "") == "Sequence") {
      for (const json& p : pre.at("pretokenizers")) steps.push_back(p);
    } else {
      steps.push_back(pre);
    }
    std::string pattern;
    for (const json& p : steps) {
      const std::string type = p.value("type", "");
      if (type == "Split") {
        if (p.value("behavior", "") != "Isolated") return fail("only the Isolated Split behavior is supported");
        pattern = p.at("pattern").at("Regex").get<std::string>();
        t->split_invert_ = p.value("invert", false);
      } else if (type == "ByteLevel") {
        if (p.value("add_prefix_space", false)) return fail("ByteLevel add_prefix_space is not supported");
        if (p.value("use_regex", true)) return fail("ByteLevel use_regex is not supported (Qwen2 splits first)");
      } else {
        return fail(absl::StrCat("pre-tokenizer ", type, " is not supported"));
      }
    }
    if (pattern.empty()) return fail("no Split pre-tokenizer regex");
    if (t->split_invert_) return fail("an inverted Split is not supported");
    int err = 0;
    PCRE2_SIZE offset = 0;
    t->regex_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                              PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &err, &offset, nullptr);
    if (t->regex_ == nullptr) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      return fail(absl::StrCat("pre-tokenizer regex does not compile at ", offset, ": ",
                               reinterpret_cast<const char*>(msg)));
    }
    pcre2_jit_compile(t->regex_, PCRE2_JIT_COMPLETE);  // falls back to the interpreter if JIT is off
  } catch (const json::exception& e) {
    return fail(absl::StrCat("unexpected structure: ", e.what()));
  }
  return std::unique_ptr<Tokenizer>(std::move(t));
}

void BpeTokenizer::split_added(std::string_view text, bool normalized,
                               std::vector<Segment>& out) const {
  size_t start = 0;  // beginning of the pending plain text
  size_t pos = 0;
  while (pos < text.size()) {
    const AddedToken* hit = nullptr;
    for (const AddedToken& a : added_tokens_) {  // longest first: leftmost-longest
      if (a.normalized != normalized) continue;
      if (text.compare(pos, a.content.size(), a.content) != 0) continue;
      if (a.single_word && (is_word_char(text, pos, true) || is_word_char(text, pos + a.content.size(), false))) {
        continue;
      }
      hit = &a;
      break;
    }
    if (hit == nullptr) {
      ++pos;
      continue;
    }
    size_t begin = pos, end = pos + hit->content.size();
    if (hit->lstrip) {
      while (begin > start && std::isspace(static_cast<unsigned char>(text[begin - 1]))) --begin;
    }
    if (hit->rstrip) {
      while (end < text.size() && std::isspace(static_cast<unsigned char>(text[end]))) ++end;
    }
    if (begin > start) out.push_back({std::string(text.substr(start, begin - start)), -1});
    out.push_back({hit->content, hit->id});
    start = pos = end;
  }
  if (start < text.size()) out.push_back({std::string(text.substr(start)), -1});
}

absl::StatusOr<std::vector<int32_t>> BpeTokenizer::encode(std::string_view text) const {
  if (!valid_utf8(text)) return absl::InvalidArgumentError("text is not valid UTF-8");
  std::vector<Segment> raw;
  split_added(text, /*normalized=*/false, raw);
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  std::vector<Segment> parts;
  for (Segment& seg : raw) {
    if (seg.added_id >= 0) {
      ids.push_back(seg.added_id);
      continue;
    }
    const std::string normalized = nfc_ ? nfc(seg.text) : seg.text;
    parts.clear();
    split_added(normalized, /*normalized=*/true, parts);
    for (const Segment& p : parts) {
      if (p.added_id >= 0) {
        ids.push_back(p.added_id);
      } else {
        encode_piece(p.text, ids);
      }
    }
  }
  return ids;
}

// Pre-tokenizes with the Split regex (matches and the gaps between them are pieces), then BPE.
void BpeTokenizer::encode_piece(std::string_view text, std::vector<int32_t>& out) const {
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(regex_, nullptr);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0, last = 0;
  while (pos < text.size()) {
    const int rc = pcre2_match(regex_, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, md, nullptr);
    if (rc < 0) break;  // no further match: the rest is one gap
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    const size_t begin = ov[0], end = ov[1];
    if (begin > last) bpe(std::string(text.substr(last, begin - last)), out);
    if (end > begin) bpe(std::string(text.substr(begin, end - begin)), out);
    last = std::max(last, end);
    pos = end;
    if (end == begin) {  // an empty match: step over one whole character
      ++pos;
      while (pos < text.size() && (static_cast<unsigned char>(text[pos]) & 0xC0) == 0x80) ++pos;
    }
  }
  if (last < text.size()) bpe(std::string(text.substr(last)), out);
  pcre2_match_data_free(md);
}

void BpeTokenizer::bpe(const std::string& word, std::vector<int32_t>& out) const {
  {
    std::lock_guard<std::mutex> lock(cache_mu_);
    const auto it = cache_.find(word);
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  // Each byte starts as its single-character token; merge the lowest-ranked adjacent pair (the
  // leftmost among equals) until none is in the merge table.
  std::vector<int32_t> symbols;
  symbols.reserve(word.size());
  for (unsigned char b : word) symbols.push_back(byte_id_[b]);
  while (symbols.size() > 1) {
    int32_t best_rank = std::numeric_limits<int32_t>::max();
    size_t best = 0;
    int32_t merged = -1;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      const uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(symbols[i])) << 32) |
                           static_cast<uint32_t>(symbols[i + 1]);
      const auto it = merges_.find(key);
      if (it != merges_.end() && it->second.first < best_rank) {
        best_rank = it->second.first;
        best = i;
        merged = it->second.second;
      }
    }
    if (merged < 0) break;
    symbols[best] = merged;
    symbols.erase(symbols.begin() + static_cast<std::ptrdiff_t>(best) + 1);
  }
  out.insert(out.end(), symbols.begin(), symbols.end());
  std::lock_guard<std::mutex> lock(cache_mu_);
  if (cache_.size() >= 50000) cache_.clear();  // bounded: long-running daemons see endless text
  cache_.emplace(word, std::move(symbols));
}

absl::StatusOr<std::string> BpeTokenizer::decode(std::span<const int32_t> ids,
                                                 bool skip_special) const {
  std::string bytes;
  for (const int32_t id : ids) {
    if (id < 0 || id >= vocab_size() || id_to_token_[static_cast<size_t>(id)].empty()) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", id, " is not in the vocabulary of ",
                                                     vocab_size(), " tokens"));
    }
    const std::string& token = id_to_token_[static_cast<size_t>(id)];
    if (added_[static_cast<size_t>(id)]) {
      if (!(skip_special && special_[static_cast<size_t>(id)])) bytes += token;
      continue;
    }
    // Byte-level characters back to the bytes they stand for.
    const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(token.data());
    utf8proc_ssize_t left = static_cast<utf8proc_ssize_t>(token.size());
    while (left > 0) {
      utf8proc_int32_t cp;
      const utf8proc_ssize_t n = utf8proc_iterate(p, left, &cp);
      if (n <= 0) break;
      const auto it = cp_byte_.find(static_cast<uint32_t>(cp));
      if (it != cp_byte_.end()) {
        bytes += static_cast<char>(it->second);
      } else {
        bytes.append(reinterpret_cast<const char*>(p), static_cast<size_t>(n));
      }
      p += n;
      left -= n;
    }
  }
  return utf8_lossy(bytes);
}

}  // namespace

absl::StatusOr<std::string> add_special_tokens(const std::string& json_text,
                                               const std::vector<std::string>& tokens) {
  json doc;
  try {
    doc = json::parse(json_text);
    json& added = doc["added_tokens"];
    if (added.is_null()) added = json::array();
    const json& vocab = doc.at("model").at("vocab");
    int32_t next = -1;
    for (const auto& [token, id] : vocab.items()) next = std::max(next, id.get<int32_t>());
    for (const json& a : added) next = std::max(next, a.at("id").get<int32_t>());
    ++next;
    for (const std::string& token : tokens) {
      bool present = false;
      for (json& a : added) {
        if (a.at("content") == token) {
          a["special"] = true;
          present = true;
        }
      }
      if (present) continue;
      const auto in_vocab = vocab.find(token);
      const int32_t id = in_vocab != vocab.end() ? in_vocab->get<int32_t>() : next++;
      added.push_back({{"id", id}, {"content", token}, {"single_word", false}, {"lstrip", false},
                       {"rstrip", false}, {"normalized", false}, {"special", true}});
    }
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", e.what()));
  }
  return doc.dump();
}

absl::StatusOr<std::unique_ptr<Tokenizer>> load_bpe_tokenizer_json(const std::string& json_text,
                                                                   const std::string& source) {
  return BpeTokenizer::load(json_text, source);
}

}  // namespace cpm::core::io
