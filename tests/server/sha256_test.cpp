// SPDX-License-Identifier: Apache-2.0
#include "common/sha256.h"

#include <gtest/gtest.h>

#include <string>

#include "test_util.h"

namespace cpm::core {
namespace {

std::string hex(std::string_view data) {
  Sha256 h;
  h.update(data);
  return h.hex_digest();
}

// FIPS 180-4 / NIST CAVP example messages, including the lengths around the padding boundary.
TEST(Sha256, MatchesTheStandardVectors) {
  EXPECT_EQ(hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(
      hex("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopq"
          "rlmnopqrsmnopqrstnopqrstu"),
      "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
  EXPECT_EQ(hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, PiecesEqualTheWhole) {
  std::string data;
  for (int i = 0; i < 1000; ++i) data += static_cast<char>(i * 7);
  Sha256 pieces;
  for (size_t at = 0, step = 1; at < data.size(); at += step, step = step % 97 + 13) {
    pieces.update(std::string_view(data).substr(at, step));
  }
  EXPECT_EQ(pieces.hex_digest(), hex(data));
}

TEST(Sha256, FileDigestAndMissingFile) {
  testing::TempDir dir;
  const std::string path = dir.write("f.bin", std::string(3 << 20, 'a') + "tail");
  auto digest = sha256_file(path);
  ASSERT_TRUE(digest.ok()) << digest.status();
  EXPECT_EQ(*digest, hex(std::string(3 << 20, 'a') + "tail"));
  EXPECT_EQ(sha256_file(dir.file("missing")).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace cpm::core
