// SPDX-License-Identifier: Apache-2.0
#include "train/conversation.h"

#include <algorithm>
#include <cctype>
#include <span>
#include <string_view>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "io/prompt.h"

namespace cpm::core::train {
namespace {

constexpr std::string_view kSingleImageTag = "<image>";
constexpr std::string_view kTagPrefix = "<image_";

// A `<image_\d+>` tag found in a text: where it starts and the tag itself.
struct TagHit {
  size_t pos;
  std::string tag;
};

// The matches of the recipe's re.split pattern r'<image_\d+>', left to right, non-overlapping.
std::vector<TagHit> find_image_tags(std::string_view text) {
  std::vector<TagHit> hits;
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

size_t count_of(std::string_view text, std::string_view needle) {
  size_t n = 0;
  for (size_t pos = text.find(needle); pos != std::string_view::npos;
       pos = text.find(needle, pos + needle.size())) {
    ++n;
  }
  return n;
}

// The recipe's preprocess() takes this branch when the record's image is a plain path.
bool single_image_form(const Conversation& c) {
  return c.images.size() == 1 && c.images[0].tag == kSingleImageTag;
}

absl::Status invalid(const std::string& message) { return absl::InvalidArgumentError(message); }

// Roles, answers and image references: what the recipe asserts, and what would make it pair
// image features with the wrong placeholders.
absl::Status check_structure(const Conversation& c) {
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
    for (const TagHit& hit : find_image_tags(turns[i].content)) {
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

absl::StatusOr<io::RgbImage> load_image(const ConversationImage& image) {
  auto bytes = io::read_file(image.path);
  if (!bytes.ok()) {
    if (absl::IsNotFound(bytes.status())) return invalid(absl::StrCat("missing image ", image.path));
    return invalid(absl::StrCat("unreadable image ", image.path, ": ", bytes.status().message()));
  }
  auto decoded = io::decode_image(
      std::span(reinterpret_cast<const uint8_t*>(bytes->data()), bytes->size()));
  if (!decoded.ok()) {
    return invalid(absl::StrCat("unreadable image ", image.path, ": ", decoded.status().message()));
  }
  return std::move(*decoded);
}

}  // namespace

absl::StatusOr<ExampleBuilder> ExampleBuilder::create(const io::Tokenizer& tokenizer,
                                                      io::ChatTemplate chat_template,
                                                      io::PreprocessorConfig preprocessor,
                                                      const ExampleOptions& options) {
  if (options.model_max_length < 1) {
    return invalid(absl::StrCat("model_max_length is ", options.model_max_length,
                                "; it must be at least 1"));
  }
  if (options.max_slice_nums < 1) {
    return invalid(absl::StrCat("max_slice_nums is ", options.max_slice_nums,
                                "; it must be at least 1"));
  }
  // The recipe always slices (the model config's slice_config) with the job's max_slice_nums.
  preprocessor.slice_mode = true;
  preprocessor.max_slice_nums = options.max_slice_nums;
  auto id_of = [&](const std::string& token) -> absl::StatusOr<int32_t> {
    const auto id = tokenizer.token_to_id(token);
    if (!id) {
      return invalid(absl::StrCat("the tokenizer has no '", token,
                                  "' token, which the MiniCPM-o fine-tuning format needs"));
    }
    return *id;
  };
  Ids ids{};
  CPM_ASSIGN_OR_RETURN(ids.chat_start, id_of("<|im_start|>"));
  CPM_ASSIGN_OR_RETURN(ids.chat_end, id_of("<|im_end|>"));
  CPM_ASSIGN_OR_RETURN(ids.assistant, id_of("assistant"));
  CPM_ASSIGN_OR_RETURN(ids.im_start, id_of(preprocessor.im_start));
  CPM_ASSIGN_OR_RETURN(ids.im_end, id_of(preprocessor.im_end));
  CPM_ASSIGN_OR_RETURN(ids.slice_start, id_of(preprocessor.slice_start));
  CPM_ASSIGN_OR_RETURN(ids.slice_end, id_of(preprocessor.slice_end));
  return ExampleBuilder(tokenizer, std::move(chat_template), std::move(preprocessor), options, ids);
}

absl::StatusOr<TrainingExample> ExampleBuilder::encode(
    const Conversation& conversation, const std::vector<std::optional<io::SliceGrid>>& grids) const {
  // Step 1: placeholders. Only sliced images get an <image_id>, numbered among themselves.
  std::vector<std::string> placeholders;
  int64_t strips = 0;
  size_t sliced = 0;
  for (const auto& grid : grids) {
    io::PreprocessorConfig config = preprocessor_;
    config.use_image_id = grid.has_value();
    io::PromptImage image;
    if (grid) image.grid = std::make_pair(grid->cols, grid->rows);
    placeholders.push_back(io::image_placeholder(config, sliced, image));
    if (grid) ++sliced;
    strips += 1 + (grid ? int64_t{grid->cols} * grid->rows : 0);
  }

  // Step 2: the placeholders go into the text.
  std::vector<io::ChatMessage> messages = conversation.turns;
  if (single_image_form(conversation)) {
    std::string& content = messages[0].content;
    if (const size_t at = content.find(kSingleImageTag); at != std::string::npos) {
      content.replace(at, kSingleImageTag.size(), placeholders[0]);
    } else {
      content = placeholders[0] + "\n" + content;
    }
  } else {
    for (io::ChatMessage& message : messages) {
      const std::vector<TagHit> hits = find_image_tags(message.content);
      if (hits.empty()) continue;  // re.split gives the text back whole
      std::string joined;
      size_t from = 0;
      for (const TagHit& hit : hits) {
        joined.append(message.content, from, hit.pos - from).append("\n");
        for (size_t k = 0; k < conversation.images.size(); ++k) {
          if (conversation.images[k].tag == hit.tag) joined += placeholders[k];
        }
        joined += "\n";
        from = hit.pos + hit.tag.size();
      }
      joined.append(message.content, from);
      message.content = std::move(joined);
    }
  }

  // Step 3: the template's text, tokenized whole, and the trainable spans.
  CPM_ASSIGN_OR_RETURN(std::vector<int32_t> ids,
                       tokenizer_->encode(chat_template_.render(messages, false)));
  std::vector<uint8_t> context(ids.size(), 1);
  for (size_t a = 1; a < ids.size(); ++a) {
    if (ids[a] != ids_.assistant || ids[a - 1] != ids_.chat_start) continue;
    const size_t start = a + 1;
    for (size_t end = start + 1; end < ids.size(); ++end) {
      if (ids[end] == ids_.chat_end) {
        std::fill(context.begin() + static_cast<std::ptrdiff_t>(start),
                  context.begin() + static_cast<std::ptrdiff_t>(end) + 1, 0);
        break;
      }
    }
  }

  // Step 4: truncation.
  const size_t full_length = ids.size();
  TrainingExample example;
  const auto max_length = static_cast<size_t>(options_.model_max_length);
  if (ids.size() > max_length) {
    ids.resize(max_length);
    context.resize(max_length);
    example.truncated = true;
  }
  if (std::all_of(context.begin(), context.end(), [](uint8_t c) { return c == 1; })) {
    return invalid(absl::StrCat("too long: ", full_length, " tokens, and model_max_length ",
                                options_.model_max_length, " leaves no answer token to train on"));
  }

  // Step 5: pre-shifted labels; eos is <|im_end|> (the recipe's tokenizer.eos_id).
  example.labels.assign(ids.size(), kIgnoreIndex);
  for (size_t i = 1; i < ids.size(); ++i) {
    if (context[i] == 0) example.labels[i - 1] = ids[i];
    if (context[i] == 1 && context[i - 1] == 0) example.labels[i - 1] = ids_.chat_end;
  }

  // Step 6: image_bound, position_ids.
  std::vector<int64_t> starts, ends;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] == ids_.im_start || ids[i] == ids_.slice_start) starts.push_back(static_cast<int64_t>(i) + 1);
    if (ids[i] == ids_.im_end || ids[i] == ids_.slice_end) ends.push_back(static_cast<int64_t>(i));
  }
  const bool spans_ok =
      starts.size() == ends.size() && static_cast<int64_t>(starts.size()) == strips &&
      [&] {
        for (size_t i = 0; i < starts.size(); ++i) {
          if (ends[i] - starts[i] != preprocessor_.image_feature_size) return false;
        }
        return true;
      }();
  if (!spans_ok) {
    if (example.truncated) {
      return invalid(absl::StrCat("too long: ", full_length, " tokens, and model_max_length ",
                                  options_.model_max_length, " cuts into the image placeholders"));
    }
    return invalid(absl::StrCat("placeholder/image count mismatch: the text holds image markers "
                                "of its own (", starts.size(), " starts and ", ends.size(),
                                " ends for ", strips, " image slices)"));
  }
  for (size_t i = 0; i < starts.size(); ++i) example.image_bound.emplace_back(starts[i], ends[i]);
  example.position_ids.resize(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) example.position_ids[i] = static_cast<int64_t>(i);
  example.input_ids = std::move(ids);
  return example;
}

absl::StatusOr<TrainingExample> ExampleBuilder::build(const Conversation& conversation) const {
  CPM_RETURN_IF_ERROR(check_structure(conversation));
  std::vector<io::RgbImage> images;
  for (const ConversationImage& image : conversation.images) {
    CPM_ASSIGN_OR_RETURN(io::RgbImage decoded, load_image(image));
    images.push_back(std::move(decoded));
  }
  return build(conversation, images);
}

absl::StatusOr<TrainingExample> ExampleBuilder::build(const Conversation& conversation,
                                                      const std::vector<io::RgbImage>& images) const {
  CPM_RETURN_IF_ERROR(check_structure(conversation));
  if (images.size() != conversation.images.size()) {
    return invalid(absl::StrCat(images.size(), " decoded images for a conversation with ",
                                conversation.images.size()));
  }
  std::vector<std::optional<io::SliceGrid>> grids;
  std::vector<at::Tensor> pixel_values;
  std::vector<std::array<int64_t, 2>> tgt_sizes;
  for (const io::RgbImage& image : images) {
    CPM_ASSIGN_OR_RETURN(io::PreprocessedImage pre, io::preprocess_image(image, preprocessor_));
    grids.push_back(pre.grid);
    for (auto& strip : pre.pixel_values) pixel_values.push_back(std::move(strip));
    tgt_sizes.insert(tgt_sizes.end(), pre.tgt_sizes.begin(), pre.tgt_sizes.end());
  }
  CPM_ASSIGN_OR_RETURN(TrainingExample example, encode(conversation, grids));
  example.pixel_values = std::move(pixel_values);
  example.tgt_sizes = std::move(tgt_sizes);
  return example;
}

absl::Status ExampleBuilder::check(const Conversation& conversation) const {
  CPM_RETURN_IF_ERROR(check_structure(conversation));
  std::vector<std::optional<io::SliceGrid>> grids;
  for (const ConversationImage& image : conversation.images) {
    CPM_ASSIGN_OR_RETURN(const io::RgbImage decoded, load_image(image));
    CPM_ASSIGN_OR_RETURN(const io::SlicePlan plan,
                         io::plan_slices(decoded.width, decoded.height, preprocessor_));
    grids.push_back(plan.grid);
  }
  return encode(conversation, grids).status();
}

}  // namespace cpm::core::train
