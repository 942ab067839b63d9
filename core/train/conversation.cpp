// SPDX-License-Identifier: Apache-2.0
#include "train/conversation.h"

#include <algorithm>
#include <span>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "io/prompt.h"

namespace cpm::core::train {
namespace {

absl::Status invalid(const std::string& message) { return absl::InvalidArgumentError(message); }

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
      const std::vector<ImageTagHit> hits = find_image_tags(message.content);
      if (hits.empty()) continue;  // re.split gives the text back whole
      std::string joined;
      size_t from = 0;
      for (const ImageTagHit& hit : hits) {
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
  CPM_RETURN_IF_ERROR(check_conversation_format(conversation));
  std::vector<io::RgbImage> images;
  for (const ConversationImage& image : conversation.images) {
    CPM_ASSIGN_OR_RETURN(io::RgbImage decoded, load_image(image));
    images.push_back(std::move(decoded));
  }
  return build(conversation, images);
}

absl::StatusOr<TrainingExample> ExampleBuilder::build(const Conversation& conversation,
                                                      const std::vector<io::RgbImage>& images) const {
  CPM_RETURN_IF_ERROR(check_conversation_format(conversation));
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
  CPM_RETURN_IF_ERROR(check_conversation_format(conversation));
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
