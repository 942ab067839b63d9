// SPDX-License-Identifier: Apache-2.0
//
// Encode throughput of our tokenizer on the conformance corpus (tests/data/tokenizer), to print
// next to Hugging Face tokenizers' (tests/core/io/make_tokenizer_goldens.py --bench) on the same
// machine. Not a test: it prints numbers.
//   tokenizer_bench TOKENIZER_DIR GOLDENS.jsonl.gz
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <thread>

#include "io/tokenizer.h"
#include "jsonl_gz.h"

namespace {

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: tokenizer_bench TOKENIZER_DIR GOLDENS.jsonl.gz\n");
    return 2;
  }
  auto tokenizer = cpm::core::io::load_tokenizer(argv[1]);
  if (!tokenizer.ok()) {
    std::fprintf(stderr, "%s\n", std::string(tokenizer.status().message()).c_str());
    return 1;
  }
  std::vector<std::string> corpus;
  size_t bytes = 0;
  for (const auto& rec : cpm::testing::read_jsonl_gz(argv[2])) {
    if (!rec.contains("text")) continue;  // the header line
    corpus.push_back(rec["text"].get<std::string>());
    bytes += corpus.back().size();
  }
  auto pass = [&](size_t begin, size_t end) {
    size_t tokens = 0;
    for (size_t i = begin; i < end; ++i) tokens += (*tokenizer)->encode(corpus[i])->size();
    return tokens;
  };
  auto report = [&](const char* label, double s, size_t tokens) {
    std::printf("cpmd %s: %.0f strings/s, %.2f MB/s, %.0f tokens/s (%.1f ms for the corpus)\n", label,
                corpus.size() / s, bytes / s / 1e6, tokens / s, s * 1000);
  };
  auto t = std::chrono::steady_clock::now();
  const size_t tokens = pass(0, corpus.size());
  report("encode (1 thread, cold word cache)", seconds_since(t), tokens);
  double best = 1e9;
  for (int i = 0; i < 3; ++i) {
    t = std::chrono::steady_clock::now();
    pass(0, corpus.size());
    best = std::min(best, seconds_since(t));
  }
  report("encode (1 thread, warm word cache)", best, tokens);
  const unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  best = 1e9;
  for (int i = 0; i < 3; ++i) {
    t = std::chrono::steady_clock::now();
    std::vector<std::thread> pool;
    for (unsigned w = 0; w < threads; ++w) {
      pool.emplace_back([&, w] { pass(corpus.size() * w / threads, corpus.size() * (w + 1) / threads); });
    }
    for (auto& th : pool) th.join();
    best = std::min(best, seconds_since(t));
  }
  char label[64];
  std::snprintf(label, sizeof label, "encode (%u threads, warm)", threads);
  report(label, best, tokens);
  return 0;
}
