// SPDX-License-Identifier: Apache-2.0
#include "io/safetensors.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/randn.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "test_util.h"

namespace cpm::core::io {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A file with a hand-written header, for the malformed cases.
std::string raw_file(const testing::TempDir& dir, const std::string& header, size_t data_bytes,
                     const std::string& name = "raw.safetensors") {
  std::string content(8, '\0');
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) content[i] = static_cast<char>(n >> (8 * i));
  content += header;
  content.append(data_bytes, '\x01');
  return dir.write(name, content);
}

TEST(Safetensors, RoundTripsEveryDtypeZeroCopy) {
  testing::TempDir dir;
  const std::vector<std::pair<std::string, at::Tensor>> tensors = {
      {"f32", at::randn({3, 5})},
      {"f16", at::randn({4}).to(at::kHalf)},
      {"bf16", at::randn({2, 3, 2}).to(at::kBFloat16)},
      {"i64", at::arange(7, at::kLong)},
      {"i32", at::arange(6, at::kInt).reshape({2, 3})},
      {"u8", at::arange(10, at::kByte)},
      {"bool", at::arange(4, at::kLong).remainder(2).to(at::kBool)},
      {"scalar", at::randn({})},
      {"empty", at::randn({0, 3})},
  };
  const std::string path = dir.file("m.safetensors");
  ASSERT_TRUE(write_safetensors(path, tensors, {{"format", "pt"}}).ok());
  at::Tensor kept;
  {
    auto file = SafetensorsFile::open(path);
    ASSERT_TRUE(file.ok()) << file.status();
    EXPECT_EQ((*file)->header().metadata.at("format"), "pt");
    EXPECT_EQ((*file)->header().tensors.size(), tensors.size());
    for (const auto& [name, expected] : tensors) {
      auto t = (*file)->tensor(name);
      ASSERT_TRUE(t.ok()) << name << ": " << t.status();
      EXPECT_EQ(t->scalar_type(), expected.scalar_type()) << name;
      EXPECT_EQ(t->sizes(), expected.sizes()) << name;
      EXPECT_TRUE(at::equal(*t, expected)) << name;
    }
    kept = *(*file)->tensor("f32");
    // Zero copy: every read of a tensor views the same mapped, aligned bytes.
    EXPECT_EQ(kept.data_ptr(), (*(*file)->tensor("f32")).data_ptr());
    EXPECT_EQ(reinterpret_cast<uintptr_t>(kept.data_ptr()) % kept.element_size(), 0u);
  }
  // The tensor keeps the mapping alive after the file object is gone.
  EXPECT_TRUE(at::equal(kept, tensors[0].second));
}

TEST(Safetensors, WriterIsAtomicAndLeavesNoTemporaryFiles) {
  testing::TempDir dir;
  const std::string path = dir.file("a.safetensors");
  ASSERT_TRUE(write_safetensors(path, {{"x", at::randn({2})}}).ok());
  const at::Tensor second = at::randn({3});
  ASSERT_TRUE(write_safetensors(path, {{"x", second}}).ok());
  size_t files = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir.path())) ++files;
  EXPECT_EQ(files, 1u);
  auto file = SafetensorsFile::open(path);
  ASSERT_TRUE(file.ok());
  EXPECT_TRUE(at::equal(*(*file)->tensor("x"), second));
  // Header padded so the data starts 8-byte aligned, as the reference writer does.
  EXPECT_EQ((*file)->header().data_offset % 8, 0u);
  // A failed write leaves the old file intact.
  EXPECT_FALSE(write_safetensors(dir.file("missing-dir/b.safetensors"), {{"x", second}}).ok());
  EXPECT_FALSE(write_safetensors(path, {{"x", second}, {"x", second}}).ok());
  EXPECT_TRUE(at::equal(*(*SafetensorsFile::open(path))->tensor("x"), second));
}

TEST(Safetensors, ReadsUnalignedDataByCopying) {
  testing::TempDir dir;
  // Header of 61 bytes: data starts at byte 69, misaligned for F32.
  std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  header.append(61 - header.size(), ' ');
  std::string content(8, '\0');
  content[0] = static_cast<char>(header.size());
  content += header;
  const float values[2] = {1.5f, -2.0f};
  content.append(reinterpret_cast<const char*>(values), sizeof values);
  const std::string path = dir.write("u.safetensors", content);
  auto file = SafetensorsFile::open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  auto t = (*file)->tensor("a");
  ASSERT_TRUE(t.ok());
  EXPECT_FLOAT_EQ(t->data_ptr<float>()[0], 1.5f);
  EXPECT_FLOAT_EQ(t->data_ptr<float>()[1], -2.0f);
}

struct Malformed {
  const char* what;
  std::string header;
  size_t data_bytes;
  const char* message;
};

TEST(Safetensors, RejectsMalformedHeadersWithClearErrors) {
  testing::TempDir dir;
  const Malformed cases[] = {
      {"not json", "{nope", 0, "not valid JSON"},
      {"not an object", "[1,2]", 0, "not a JSON object"},
      {"unknown dtype", R"({"a":{"dtype":"F8","shape":[1],"data_offsets":[0,1]}})", 1,
       "tensor 'a' has unsupported dtype 'F8'"},
      {"negative dim", R"({"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}})", 1,
       "not a non-negative integer"},
      {"no offsets", R"({"a":{"dtype":"U8","shape":[1]}})", 1, "needs data_offsets"},
      {"out of bounds", R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})", 2,
       "outside the data section of 2 bytes"},
      {"size mismatch", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 4,
       "spans 4 bytes but its shape [2] of F32 needs 8"},
      {"overlap",
       R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})",
       6, "overlaps the previous tensor"},
      {"gap", R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})", 4, "gap of 2 bytes"},
      {"trailing bytes", R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", 5,
       "cover 2 bytes of a 5-byte data section"},
      {"huge shape", R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}})",
       4, "needs more than 2^64"},
      {"bad metadata", R"({"__metadata__":{"k":1}})", 0, "__metadata__ 'k' is not a string"},
  };
  for (const Malformed& c : cases) {
    const std::string path = raw_file(dir, c.header, c.data_bytes);
    auto file = SafetensorsFile::open(path);
    ASSERT_FALSE(file.ok()) << c.what;
    EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument) << c.what;
    EXPECT_THAT(file.status().message(), HasSubstr(c.message)) << c.what;
    EXPECT_THAT(file.status().message(), HasSubstr(path)) << c.what;
  }
}

TEST(Safetensors, RejectsBadLengthsAndTruncation) {
  testing::TempDir dir;
  EXPECT_THAT(SafetensorsFile::open(dir.write("e", "")).status().message(),
              HasSubstr("has no header length"));
  EXPECT_THAT(SafetensorsFile::open(dir.write("s", "\x05\0\0")).status().message(),
              HasSubstr("has no header length"));
  std::string huge(8, '\xff');
  EXPECT_THAT(SafetensorsFile::open(dir.write("h", huge + "{}")).status().message(),
              HasSubstr("exceeds the 100 MB limit"));
  // A real file cut short at several points.
  const std::string good = dir.file("good.safetensors");
  ASSERT_TRUE(write_safetensors(good, {{"w", at::randn({16, 16})}}).ok());
  const std::string bytes = file_bytes(good);
  for (size_t cut : {size_t{4}, size_t{20}, bytes.size() / 2, bytes.size() - 1}) {
    auto file = SafetensorsFile::open(dir.write("cut", bytes.substr(0, cut)));
    EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument) << cut;
  }
  EXPECT_EQ(SafetensorsFile::open(dir.file("absent")).status().code(), absl::StatusCode::kNotFound);
}

TEST(SafetensorsCheckpoint, OpensShardsThroughTheIndex) {
  testing::TempDir dir;
  const at::Tensor a = at::randn({4, 4}), b = at::arange(3, at::kLong), c = at::randn({2});
  ASSERT_TRUE(write_safetensors(dir.file("model-00001-of-00002.safetensors"), {{"a", a}, {"b", b}}).ok());
  ASSERT_TRUE(write_safetensors(dir.file("model-00002-of-00002.safetensors"), {{"c", c}}).ok());
  dir.write("model.safetensors.index.json", R"({"metadata": {"total_size": 92}, "weight_map": {
      "a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors",
      "c": "model-00002-of-00002.safetensors"}})");
  auto ckpt = SafetensorsCheckpoint::open(dir.path().string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ(ckpt->names(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_TRUE(at::equal(*ckpt->tensor("a"), a));
  EXPECT_TRUE(at::equal(*ckpt->tensor("c"), c));
  EXPECT_THAT(ckpt->file_of("c")->path(), HasSubstr("00002"));
  EXPECT_EQ(ckpt->tensor("zzz").status().code(), absl::StatusCode::kNotFound);
}

TEST(SafetensorsCheckpoint, SingleFileAndErrors) {
  testing::TempDir dir;
  ASSERT_TRUE(write_safetensors(dir.file("model.safetensors"), {{"x", at::randn({2})}}).ok());
  auto single = SafetensorsCheckpoint::open(dir.path().string());
  ASSERT_TRUE(single.ok()) << single.status();
  EXPECT_EQ(single->names().size(), 1u);

  testing::TempDir sharded;
  ASSERT_TRUE(write_safetensors(sharded.file("s1.safetensors"), {{"a", at::randn({2})}}).ok());
  sharded.write("model.safetensors.index.json",
                R"({"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors"}})");
  auto missing = SafetensorsCheckpoint::open(sharded.path().string());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("shard s2.safetensors named by the index"));

  sharded.write("model.safetensors.index.json", R"({"weight_map": {"b": "s1.safetensors"}})");
  EXPECT_THAT(SafetensorsCheckpoint::open(sharded.path().string()).status().message(),
              HasSubstr("puts tensor 'b' in s1.safetensors, which does not hold it"));
  sharded.write("model.safetensors.index.json", R"({"weight_map": {"a": "../s1.safetensors"}})");
  EXPECT_THAT(SafetensorsCheckpoint::open(sharded.path().string()).status().message(),
              HasSubstr("must be a file name in the same folder"));
  sharded.write("model.safetensors.index.json", R"({"weights": {}})");
  EXPECT_THAT(SafetensorsCheckpoint::open(sharded.path().string()).status().message(),
              HasSubstr("needs a \"weight_map\""));
  testing::TempDir empty;
  EXPECT_EQ(SafetensorsCheckpoint::open(empty.path().string()).status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace cpm::core::io

namespace cpm::core::io {
namespace {

// A checkpoint written by the reference `safetensors` library with torch
// (tests/core/io/make_safetensors_fixture.py): two shards and an index, every dtype we read.
TEST(SafetensorsReference, ReadsFilesWrittenByTheReferenceLibrary) {
  auto ckpt = SafetensorsCheckpoint::open(CPM_TEST_SOURCE_DIR "/tests/data/safetensors");
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ(ckpt->names().size(), 10u);
  const at::Tensor base = at::arange(24, at::kFloat).reshape({2, 3, 4}) / 8 - 1;
  EXPECT_TRUE(at::equal(*ckpt->tensor("f32"), base));
  EXPECT_TRUE(at::equal(*ckpt->tensor("f16"), base.to(at::kHalf)));
  EXPECT_TRUE(at::equal(*ckpt->tensor("bf16"), base.to(at::kBFloat16)));
  EXPECT_TRUE(at::equal(*ckpt->tensor("i64"), at::arange(5, at::kLong) * -3));
  EXPECT_TRUE(at::equal(*ckpt->tensor("i32"), at::arange(6, at::kInt).reshape({2, 3})));
  EXPECT_TRUE(at::equal(*ckpt->tensor("u8"), (at::arange(7, at::kLong) * 30).to(at::kByte)));
  const at::Tensor flags = *ckpt->tensor("bool");
  ASSERT_EQ(flags.scalar_type(), at::kBool);
  EXPECT_EQ(flags.numel(), 3);
  EXPECT_TRUE(flags[0].item<bool>());
  EXPECT_FALSE(flags[1].item<bool>());
  EXPECT_FLOAT_EQ(ckpt->tensor("scalar")->item<float>(), 3.25f);
  EXPECT_EQ(ckpt->tensor("empty")->sizes(), (at::IntArrayRef{0, 4}));
  EXPECT_TRUE(at::equal(*ckpt->tensor("layer.weight"), base.reshape({6, 4}).t().contiguous()));
  EXPECT_EQ(ckpt->file_of("f32")->header().metadata.at("format"), "pt");
}

}  // namespace
}  // namespace cpm::core::io
