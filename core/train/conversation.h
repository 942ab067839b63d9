// SPDX-License-Identifier: Apache-2.0
//
// One fine-tuning record -> one training example, as the OpenBMB recipe's finetune/dataset.py does
// it for MiniCPM-o-2.6 (preprocess + conversation_to_ids + conversation_to_ids_qwen2, llm_type
// "qwen"; spec minicpm-o-2_6.md section 7; tests/core/train/make_conversation_goldens.py runs the
// recipe's own code for the goldens):
//   1. Each image is sliced (spec section 5, max_slice_nums from the options) and stands for a
//      placeholder: `<image>` + 64 `<unk>` + `</image>`, then for a sliced image its rows of
//      (`<slice>` + 64 `<unk>` + `</slice>`) x cols, rows joined by "\n".
//      QUIRK, mirrored: the recipe prepends `<image_id>N</image_id>` only to images that were
//      sliced, and N counts sliced images only. Inference (io/prompt.h, the processor) numbers
//      every image, so an unsliced image reads differently in training and at inference.
//   2. Placeholders. Single-image form (one image under the tag `<image>`): the `<image>` in the
//      first user turn becomes the placeholder, or, with none, the placeholder + "\n" goes in
//      front of that turn. Several images (`<image_00>`, `<image_01>`, ...): every turn is split on
//      the tags, each tag replaced by its image's placeholder, and the parts joined by "\n" (empty
//      parts included, as Python's re.split + "\n".join does).
//   3. The checkpoint's chat template (with its default system turn) is rendered without a
//      generation prompt and tokenized. context = 1 everywhere except, for every `assistant` token
//      right after `<|im_start|>`, from the token after it through the next `<|im_end|>`: the "\n",
//      the answer and its `<|im_end|>` are trained.
//   4. ids and context are cut to model_max_length. An example with no trainable token left is
//      rejected.
//   5. Labels are pre-shifted: labels[i-1] = ids[i] where context[i] == 0, and labels[i-1] = eos
//      (`<|im_end|>`) where context[i] == 1 follows a 0; -100 elsewhere. The loss takes
//      cross_entropy(logits[i], labels[i]) with no further shift.
//   6. image_bound: [start, end) spans from after each `<image>`/`<slice>` to each
//      `</image>`/`</slice>`, paired in order; position_ids = 0, 1, 2, ...
// Where the recipe would crash, loop forever or silently misplace features, the example is
// rejected instead, with the reason (see ExampleBuilder::check).
//
// Thread-safe: an ExampleBuilder is immutable after create().
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "io/chat_template.h"
#include "io/image_decode.h"
#include "io/image_slicing.h"
#include "io/model_config.h"
#include "io/tokenizer.h"
#include "train/conversation_format.h"

namespace cpm::core::train {

// The recipe's ignore index for labels.
inline constexpr int32_t kIgnoreIndex = -100;

struct ExampleOptions {
  // Tokens kept per example (the recipe's model_max_length); longer ones are cut. Default: 2048.
  int64_t model_max_length = 2048;
  // Most slices per image. Default: 9.
  int max_slice_nums = 9;
};

// What the model trains on for one record.
struct TrainingExample {
  std::vector<int32_t> input_ids;     // [T], T <= model_max_length
  std::vector<int32_t> labels;        // [T], pre-shifted (see the top of this file); -100 ignored
  std::vector<int64_t> position_ids;  // [T], 0 .. T-1
  // [start, end) token spans of the `<unk>` runs (query_num long), one per pixel strip, in order.
  std::vector<std::pair<int64_t, int64_t>> image_bound;
  // Per image, source first, then its slices row-major; all images of the record in order.
  std::vector<at::Tensor> pixel_values;           // float32 [3, p, h * w * p]
  std::vector<std::array<int64_t, 2>> tgt_sizes;  // (h, w) in patches
  bool truncated = false;  // the tokens were cut to model_max_length
};

// Builds training examples from conversations. Holds the tokenizer by reference: it must outlive
// the builder.
class ExampleBuilder {
 public:
  // INVALID_ARGUMENT when the tokenizer lacks a token the recipe needs (<|im_start|>, <|im_end|>,
  // "assistant", the image markers) or an option is out of range.
  static absl::StatusOr<ExampleBuilder> create(const io::Tokenizer& tokenizer,
                                               io::ChatTemplate chat_template,
                                               io::PreprocessorConfig preprocessor,
                                               const ExampleOptions& options);

  // Reads, decodes and slices the images, then builds the example. A conversation the recipe
  // cannot train on is INVALID_ARGUMENT with the reason ("missing image ...", "empty answer ...",
  // "no trainable token left ..."); the message names no record, the caller does.
  absl::StatusOr<TrainingExample> build(const Conversation& conversation) const;
  // The same with the images already decoded (images[k] is conversation.images[k]).
  absl::StatusOr<TrainingExample> build(const Conversation& conversation,
                                        const std::vector<io::RgbImage>& images) const;

  // Every check build() makes, without resizing or normalising pixels (images are still read and
  // decoded, so an unreadable one is found): for validating a whole dataset up front.
  absl::Status check(const Conversation& conversation) const;

  const ExampleOptions& options() const { return options_; }

 private:
  struct Ids {
    int32_t chat_start, chat_end, assistant;          // <|im_start|>, <|im_end|>, "assistant"
    int32_t im_start, im_end, slice_start, slice_end;  // <image> </image> <slice> </slice>
  };
  ExampleBuilder(const io::Tokenizer& tokenizer, io::ChatTemplate chat_template,
                 io::PreprocessorConfig preprocessor, const ExampleOptions& options, Ids ids)
      : tokenizer_(&tokenizer),
        chat_template_(std::move(chat_template)),
        preprocessor_(std::move(preprocessor)),
        options_(options),
        ids_(ids) {}

  // Steps 2-6, for images sliced along `grids` (nullopt: not sliced).
  absl::StatusOr<TrainingExample> encode(const Conversation& conversation,
                                         const std::vector<std::optional<io::SliceGrid>>& grids) const;

  const io::Tokenizer* tokenizer_;
  io::ChatTemplate chat_template_;
  io::PreprocessorConfig preprocessor_;  // max_slice_nums from the options
  ExampleOptions options_;
  Ids ids_;
};

}  // namespace cpm::core::train
