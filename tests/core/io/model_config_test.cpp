// SPDX-License-Identifier: Apache-2.0
#include "io/model_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "test_util.h"

namespace cpm::core::io {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// The shape of MiniCPM-o-2.6's config.json (LLM fields at the top, slicing in slice_config,
// audio/TTS sections that the vision path ignores).
constexpr const char* kMiniCpmoConfig = R"({
  "architectures": ["MiniCPMO"], "model_type": "minicpmo",
  "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
  "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 151700,
  "rope_theta": 1000000.0, "rms_norm_eps": 1e-06, "max_position_embeddings": 32768,
  "tie_word_embeddings": false, "hidden_act": "silu", "bos_token_id": 151643,
  "eos_token_id": 151645, "torch_dtype": "bfloat16", "use_sliding_window": false,
  "query_num": 64, "patch_size": 14, "slice_mode": true, "use_image_id": true,
  "drop_vision_last_layer": false, "vision_batch_size": 16, "init_audio": true,
  "slice_config": {"max_slice_nums": 9, "patch_size": 14, "scale_resolution": 448,
                   "model_type": "minicpmv"},
  "vision_config": {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
                    "num_attention_heads": 16, "patch_size": 14, "image_size": 980,
                    "model_type": "siglip_vision_model"},
  "audio_config": {"d_model": 1024}, "tts_config": {"llm_dim": 3584}
})";

TEST(ModelConfig, ParsesMiniCpmo26) {
  auto c = parse_model_config(kMiniCpmoConfig, "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(c->architectures, ElementsAre("MiniCPMO"));
  EXPECT_EQ(c->hidden_size, 3584);
  EXPECT_EQ(c->num_key_value_heads, 4);
  EXPECT_EQ(c->head_dim(), 128);
  EXPECT_EQ(c->resampler_heads(), 28);
  EXPECT_EQ(c->vocab_size, 151700);
  EXPECT_DOUBLE_EQ(c->rope_theta, 1e6);
  EXPECT_EQ(c->max_slice_nums, 9);
  EXPECT_EQ(c->scale_resolution, 448);
  EXPECT_EQ(c->vision.num_hidden_layers, 27);
  EXPECT_EQ(c->vision_layers_used(), 27);
  EXPECT_EQ(c->vision.image_size / c->vision.patch_size, 70);
}

TEST(ModelConfig, DefaultsAndAlternateForms) {
  auto c = parse_model_config(R"({"hidden_size": 256, "num_attention_heads": 4,
      "eos_token_id": [151645, 151643], "max_slice_nums": 4, "drop_vision_last_layer": true,
      "vision_config": {"hidden_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2}})",
                              "tiny/config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_key_value_heads, 4);  // absent: equal to num_attention_heads, as in Qwen2
  EXPECT_EQ(c->eos_token_id, 151645);
  EXPECT_EQ(c->max_slice_nums, 4);  // top-level form of older configs
  EXPECT_EQ(c->vision_layers_used(), 1);
  EXPECT_EQ(c->intermediate_size, 18944);  // spec default
}

TEST(ModelConfig, ErrorsNameTheFileAndField) {
  struct Case {
    const char* json;
    const char* message;
  } cases[] = {
      {"[1]", "is not a JSON object"},
      {"{\"hidden_size\": \"big\"}", "'hidden_size' must be an integer"},
      {"{\"hidden_size\": 3584.5}", "'hidden_size' must be an integer"},
      {"{\"hidden_size\": 0}", "'hidden_size' must be positive"},
      {"{\"hidden_size\": 3583}", "not a multiple of num_attention_heads"},
      {"{\"num_key_value_heads\": 5}", "not a multiple of num_key_value_heads"},
      {"{\"vision_config\": {\"image_size\": 981}}", "image_size must be a multiple"},
      {"{\"vision_config\": 3}", "'vision_config' must be an object"},
      {"{\"slice_config\": {\"max_slice_nums\": \"x\"}}", "slice_config: 'max_slice_nums'"},
      {"{\"tie_word_embeddings\": 1}", "'tie_word_embeddings' must be true or false"},
      {"{\"drop_vision_last_layer\": true, \"vision_config\": {\"num_hidden_layers\": 1}}",
       "leaves no vision layer"},
  };
  for (const Case& c : cases) {
    auto parsed = parse_model_config(c.json, "m/config.json");
    ASSERT_FALSE(parsed.ok()) << c.json;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(parsed.status().message(), HasSubstr("m/config.json")) << c.json;
    EXPECT_THAT(parsed.status().message(), HasSubstr(c.message)) << c.json;
  }
}

TEST(PreprocessorConfig, ParsesAndValidates) {
  auto p = parse_preprocessor_config(R"({"image_processor_type": "MiniCPMVImageProcessor",
      "max_slice_nums": 9, "scale_resolution": 448, "patch_size": 14, "use_image_id": true,
      "image_feature_size": 64, "slice_mode": true, "norm_mean": [0.5, 0.5, 0.5],
      "norm_std": [0.5, 0.5, 0.5], "im_start": "<image>", "slice_start": "<slice>",
      "unk": "<unk>", "feature_size": 128})",
                                     "p.json");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->scale_resolution, 448);
  EXPECT_EQ(p->im_id_start, "<image_id>");
  EXPECT_THAT(parse_preprocessor_config(R"({"norm_std": [0.5, 0.5]})", "p.json").status().message(),
              HasSubstr("3 values"));
  EXPECT_THAT(parse_preprocessor_config(R"({"norm_std": [0.5, 0, 0.5]})", "p.json").status().message(),
              HasSubstr("must be positive"));
}

TEST(GenerationAndTokenizerConfig, Parse) {
  auto g = parse_generation_config(R"({"do_sample": true, "top_p": 0.8, "top_k": 100,
      "temperature": 0.7, "repetition_penalty": 1.05, "eos_token_id": [151645, 151643],
      "pad_token_id": 0, "transformers_version": "4.44.2"})",
                                   "g.json");
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_TRUE(*g->do_sample);
  EXPECT_EQ(*g->top_k, 100);
  EXPECT_THAT(g->eos_token_ids, ElementsAre(151645, 151643));
  EXPECT_FALSE(g->max_new_tokens.has_value());
  EXPECT_THAT(parse_generation_config(R"({"top_p": 1.5})", "g.json").status().message(),
              HasSubstr("'top_p' must be in (0, 1]"));

  auto t = parse_tokenizer_config(R"({"chat_template": "{% for m in messages %}{% endfor %}",
      "eos_token": {"content": "<|im_end|>", "lstrip": false}, "pad_token": "<|endoftext|>",
      "unk_token": "<unk>", "bos_token": null, "add_bos_token": false})",
                                  "t.json");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->eos_token, "<|im_end|>");
  EXPECT_EQ(t->pad_token, "<|endoftext|>");
  EXPECT_EQ(t->bos_token, "");
}

TEST(CheckpointConfigs, LoadsADirectoryAndListsMissingFiles) {
  testing::TempDir dir;
  EXPECT_EQ(load_checkpoint_configs(dir.path().string()).status().code(),
            absl::StatusCode::kNotFound);
  dir.write("config.json", kMiniCpmoConfig);
  auto c = load_checkpoint_configs(dir.path().string());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(c->missing, ElementsAre("preprocessor_config.json", "generation_config.json",
                                      "tokenizer_config.json"));
  dir.write("preprocessor_config.json", R"({"max_slice_nums": 4})");
  dir.write("generation_config.json", R"({"top_k": 5})");
  c = load_checkpoint_configs(dir.path().string());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->preprocessor.max_slice_nums, 4);
  EXPECT_EQ(*c->generation.top_k, 5);
  EXPECT_THAT(c->missing, ElementsAre("tokenizer_config.json"));
  dir.write("tokenizer_config.json", "{broken");
  EXPECT_THAT(load_checkpoint_configs(dir.path().string()).status().message(),
              HasSubstr("tokenizer_config.json: not valid JSON"));
}

}  // namespace
}  // namespace cpm::core::io
