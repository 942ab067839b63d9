// SPDX-License-Identifier: Apache-2.0
//
// One record of the OpenBMB recipe's conversation format and the rules it must follow before
// anything is tokenized: roles, answers and how the text refers to the images. LibTorch-free (part
// of cpm_portable), so `cpmctl dataset check` applies the rules the daemon applies.
//
// Thread-safe: free functions over values.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "io/chat_template.h"

namespace cpm::core::train {

// The tag of the single-image form: the record's "image" is one path, the text says `<image>`.
inline constexpr std::string_view kSingleImageTag = "<image>";

struct ConversationImage {
  // The tag the text refers to it by: "<image>" in the single-image form, else the record's key
  // ("<image_00>", ...).
  std::string tag;
  // The image file (already resolved against the dataset's folder).
  std::string path;
};

// One record of the recipe's conversation format.
struct Conversation {
  std::vector<ConversationImage> images;  // in the record's order
  std::vector<io::ChatMessage> turns;     // roles "user" | "assistant", the first a user
};

// The recipe's preprocess() takes its single-image branch when the record's image is a plain path.
bool single_image_form(const Conversation& conversation);

// A `<image_N>` tag found in a text: where it starts and the tag itself.
struct ImageTagHit {
  size_t pos;
  std::string tag;
};

// The matches of the recipe's re.split pattern r'<image_\d+>', left to right, non-overlapping.
std::vector<ImageTagHit> find_image_tags(std::string_view text);

// Roles, answers and image references: what the recipe asserts, and what would make it pair image
// features with the wrong placeholders. INVALID_ARGUMENT with the reason ("no assistant turn",
// "empty answer (turn 2)", "placeholder/image count mismatch: ..."); the message names no record,
// the caller does. The images themselves are not looked at.
absl::Status check_conversation_format(const Conversation& conversation);

}  // namespace cpm::core::train
