// SPDX-License-Identifier: Apache-2.0
#include "train/conversation_format.h"

#include <algorithm>
#include <cctype>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace cpm::core::train {
namespace {

constexpr std::string_view kTagPrefix = "<image_";

size_t count_of(std::string_view text, std::string_view needle) {
  size_t n = 0;
  for (size_t pos = text.find(needle); pos != std::string_view::npos;
       pos = text.find(needle, pos + needle.size())) {
    ++n;
  }
  return n;
}

absl::Status invalid(const std::string& message) { return absl::InvalidArgumentError(message); }

}  // namespace

bool single_image_form(const Conversation& c) {
  return c.images.size() == 1 && c.images[0].tag == kSingleImageTag;
}

std::vector<ImageTagHit> find_image_tags(std::string_view text) {
  std::vector<ImageTagHit> hits;
  size_t pos = text.find(kTagPrefix);
  while (pos != std::string_view::npos) {
    size_t end = pos + kTagPrefix.size();
    while (end < text.size() && std::isdigit(static_cast<unsigned char>(text[end]))) ++end;
    if (end > pos + kTagPrefix.size() && end < text.size() && text[end] == '>') {
      hits.push_back({pos, std::string(text.substr(pos, end + 1 - pos))});
      pos = text.find(kTagPrefix, end + 1);
    } else {
      pos = text.find(kTagPrefix, pos + 1);
    }
  }
  return hits;
}

absl::Status check_conversation_format(const Conversation& c) {
  const auto& turns = c.turns;
  auto has_role = [&](std::string_view role) {
    return std::any_of(turns.begin(), turns.end(), [&](const auto& t) { return t.role == role; });
  };
  if (!has_role("user")) return invalid("no user turn");
  if (!has_role("assistant")) return invalid("no assistant turn");
  for (size_t i = 0; i < turns.size(); ++i) {
    if (turns[i].role != "user" && turns[i].role != "assistant") {
      return invalid(absl::StrCat("turn ", i + 1, " has role \"", turns[i].role,
                                  "\"; only \"user\" and \"assistant\" are allowed"));
    }
  }
  if (turns.front().role != "user") return invalid("the first turn must be the user's");
  for (size_t i = 0; i < turns.size(); ++i) {
    if (turns[i].role == "assistant" && absl::StripAsciiWhitespace(turns[i].content).empty()) {
      return invalid(absl::StrCat("empty answer (turn ", i + 1, ")"));
    }
  }
  if (c.images.empty()) return invalid("no image");

  if (single_image_form(c)) {
    // The recipe replaces every `<image>` of the first turn with the one image's placeholder and
    // leaves the others as text, which tokenizes to stray image markers.
    if (const size_t n = count_of(turns[0].content, kSingleImageTag); n > 1) {
      return invalid(absl::StrCat("placeholder/image count mismatch: the first turn holds ", n,
                                  " <image> tags for 1 image"));
    }
    for (size_t i = 1; i < turns.size(); ++i) {
      if (count_of(turns[i].content, kSingleImageTag) > 0) {
        return invalid(absl::StrCat("placeholder/image count mismatch: <image> in turn ", i + 1,
                                    "; only the first turn may hold it"));
      }
    }
    return absl::OkStatus();
  }

  // Several images: each listed tag must be referenced exactly once, in the listed order (the
  // recipe stacks the pixels in listed order and the placeholders in text order).
  std::vector<std::string> references;
  for (size_t i = 0; i < turns.size(); ++i) {
    if (count_of(turns[i].content, kSingleImageTag) > 0) {
      return invalid(absl::StrCat("placeholder/image count mismatch: <image> in turn ", i + 1,
                                  " of a record with several images; name them <image_00>, "
                                  "<image_01>, ..."));
    }
    for (const ImageTagHit& hit : find_image_tags(turns[i].content)) {
      const bool known = std::any_of(c.images.begin(), c.images.end(),
                                     [&](const auto& image) { return image.tag == hit.tag; });
      if (!known) {
        return invalid(absl::StrCat("placeholder/image count mismatch: ", hit.tag, " in turn ",
                                    i + 1, " names no image of the record"));
      }
      references.push_back(hit.tag);
    }
  }
  for (const ConversationImage& image : c.images) {
    const auto n = std::count(references.begin(), references.end(), image.tag);
    if (n != 1) {
      return invalid(absl::StrCat("placeholder/image count mismatch: image ", image.tag,
                                  " is referenced ", n, " times; each image needs exactly one"));
    }
  }
  for (size_t k = 0; k < c.images.size(); ++k) {
    if (references[k] != c.images[k].tag) {
      return invalid(absl::StrCat("images are referenced in the order ",
                                  absl::StrJoin(references, ", "),
                                  "; reference them in the order they are listed"));
    }
  }
  return absl::OkStatus();
}

}  // namespace cpm::core::train
